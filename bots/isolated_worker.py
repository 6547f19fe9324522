"""The child side of process isolation: run a bot's ``@process`` handlers, one job at a time.

bots/isolation.py starts this as ``python -u -m corral.bots.isolated_worker BOT_PID``. The bot and the
child speak length-prefixed msgpack frames over the child's stdin and stdout:

    bot -> child    Init (first frame only), then Run per job
    child -> bot    any number of Progress, then Returned or Raised

The frames are defined here rather than in core/messages.py because they never touch NATS: they
are private to one bot and its children, which always run the same code. The handler's own
prints go to the bot's stderr (its log), never into the frames.

SIGTERM from the bot means "your job is cancelled": it raises :class:`HandlerCancelled` inside the
handler, and the child exits once the handler has unwound. The bot SIGKILLs it if it lingers.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import threading
from typing import Any, BinaryIO

import msgspec

from corral.core.handlers import Handler, HandlerCancelled, JobContext, import_handler
from corral.core.messages import Job


class Init(msgspec.Struct, tag="init"):
    """The bot's import path, so the child resolves ``module:function`` exactly as the bot did."""

    sys_path: list[str]


class Run(msgspec.Struct, tag="run"):
    """Run handler ``spec`` once: what a thread-run handler would get, minus the bot's connection."""

    spec: str
    args: dict[str, Any]
    job: Job
    attempt: int
    bot: str


class Progress(msgspec.Struct, tag="progress"):
    """One ``ctx.progress(percent, message)`` call; percent in 0-100."""

    percent: float
    message: str | None = None


class Returned(msgspec.Struct, tag="returned"):
    """The handler returned ``value``."""

    value: Any = None


class Raised(msgspec.Struct, tag="raised"):
    """The handler raised: the exception's type name and message, pickled too when that round-trips."""

    exc_type: str
    message: str
    pickled: bytes | None = None


ToChild = Init | Run
ToParent = Progress | Returned | Raised

HEADER = struct.Struct(">I")  #: the frame length prefix: 4 bytes, big-endian
_encoder = msgspec.msgpack.Encoder()
TO_CHILD = msgspec.msgpack.Decoder(ToChild)
TO_PARENT = msgspec.msgpack.Decoder(ToParent)


def frame(msg: msgspec.Struct) -> bytes:
    """``msg`` encoded, behind its length.

    Raises:
        TypeError, OverflowError: a value msgpack cannot carry.
    """
    data = _encoder.encode(msg)
    return HEADER.pack(len(data)) + data


class _Pipe:
    """Frames to the bot. Locked: a handler may report progress from threads of its own."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def progress(self, percent: float, message: str | None = None) -> None:
        # Converted here, so a bad value raises in the handler, as it would in a thread.
        self.send(frame(Progress(float(percent), None if message is None else str(message))))


def _receive(inp: BinaryIO) -> ToChild | None:
    """The next frame from the bot; None once the bot has closed the pipe (it exited)."""
    header = inp.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return TO_CHILD.decode(inp.read(HEADER.unpack(header)[0]))


def _raised(e: BaseException) -> Raised:
    try:
        pickled = pickle.dumps(e)
        pickle.loads(pickled)  # an exception with a custom __init__ may not come back
    except Exception:  # noqa: BLE001 - then only its type and message travel
        pickled = None
    return Raised(exc_type=type(e).__name__, message=str(e), pickled=pickled)


def _run(run: Run, handlers: dict[str, Handler], pipe: _Pipe) -> bytes:
    """Run one job; the reply frame. HandlerCancelled propagates: the child then exits."""
    ctx = JobContext(job=run.job, attempt=run.attempt, bot=run.bot, progress=pipe.progress)
    try:
        fn = handlers.get(run.spec)
        if fn is None:
            fn = handlers[run.spec] = import_handler(run.spec)
        value = fn(run.args, ctx)
    except Exception as e:  # noqa: BLE001 - the worker boundary: the bot fails the attempt with it
        return frame(_raised(e))
    try:
        return frame(Returned(value))
    except (TypeError, OverflowError) as e:
        return frame(_raised(TypeError(f"the result cannot be sent to the bot: {e}")))


_cancelled = False


def _on_sigterm(signum: int, _frame: object) -> None:
    global _cancelled
    _cancelled = True
    raise HandlerCancelled("the job was cancelled, timed out, or its bot is draining")


def _die_with_parent(bot_pid: int) -> None:
    """On Linux, have the kernel SIGKILL this child when the bot dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != bot_pid:  # the bot died before prctl took effect
        os._exit(1)


def serve(inp: BinaryIO, pipe: _Pipe) -> None:
    """Answer Run frames until the bot closes the pipe or cancels a job."""
    handlers: dict[str, Handler] = {}
    while not _cancelled:
        msg = _receive(inp)
        if msg is None:
            return
        if isinstance(msg, Init):
            sys.path[:] = msg.sys_path
            continue
        pipe.send(_run(msg, handlers, pipe))


def main() -> None:
    _die_with_parent(int(sys.argv[1]))
    # Ctrl-C in a terminal reaches the whole process group; whether jobs stop is the bot's call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep the frames on private copies of stdin/stdout, and point fd 1 at stderr so that whatever
    # the handler prints (even from C) lands in the bot's log instead of corrupting a frame.
    inp, out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        serve(inp, _Pipe(out))
    except HandlerCancelled:
        pass  # cancelled while idle, or the handler let it through: either way, this child is done
    except BrokenPipeError:
        pass  # the bot is gone


if __name__ == "__main__":
    main()
