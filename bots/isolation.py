"""Sync handlers that a cancellation, a timeout or a drain really stops: child processes.

A sync handler normally runs in a thread, and Python cannot interrupt a thread: on cancellation
the thread is abandoned and runs on. A kind registered ``--handler kind=module:function@process``
runs in a child process (bots/isolated_worker.py) instead. When the job's scope is cancelled
(`corral cancel`, the job's ``timeout``, a drain) the child gets SIGTERM, which raises
:class:`~corral.core.handlers.HandlerCancelled` inside the handler so its ``finally`` blocks run, then
SIGKILL if it is still there :data:`KILL_GRACE` seconds later. The job ends only once the process
is gone, and then ends as any cancelled job does (cancelled, retried after a timeout, handed back).

Children are reused, one job at a time each, so the interpreter start and the handler's imports
are paid once per child, not per job. A child whose handler returned or raised goes back to the
pool; a stopped or dead one never does, so a killed child cannot poison later jobs. Each running
child holds one of the bot's job slots, so there are at most ``--concurrency`` of them. There is
no timer task (the pool lives outside the bot's task group): a child idle for over
:data:`IDLE_SECONDS` is retired when a job next asks for one. Idle children exit when the bot
does (their stdin closes); on Linux a busy one dies with its bot too, even a SIGKILLed one.

Why not ``anyio.to_process``: its workers re-run the parent's ``__main__`` (as multiprocessing's
spawn does), and ``python -m corral.cli``, which is how fleets start bots, has no main guard, so
every worker would fail to start; it also sends its workers' stderr to /dev/null, caps them at the
CPU count, has no channel for ``ctx.progress``, and gives handlers no chance to clean up.
"""

from __future__ import annotations

import os
import pickle
import sys
from contextlib import suppress
from typing import Any

import anyio
import msgspec
from anyio.abc import Process
from anyio.lowlevel import RunVar
from anyio.streams.buffered import BufferedByteReceiveStream

from corral.bots.isolated_worker import HEADER, TO_PARENT, Init, Progress, Raised, Returned, Run, ToParent, frame
from corral.core.errors import HandlerProcessError
from corral.core.handlers import JobContext

KILL_GRACE = 2.0  #: seconds a cancelled handler has to unwind after SIGTERM, before SIGKILL
IDLE_SECONDS = 300.0  #: an idle child older than this is retired when the pool is next used


class _Child:
    """One child process, running one job at a time."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.idle_since = 0.0
        assert process.stdin is not None and process.stdout is not None, "spawned with pipes for both"
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self._greeting = frame(Init(sys_path=list(sys.path)))  # sent with the first job

    @classmethod
    async def spawn(cls) -> _Child:
        # stderr is inherited: the handler's output and any traceback land in the bot's log.
        command = [sys.executable, "-u", "-m", "corral.bots.isolated_worker", str(os.getpid())]
        return cls(await anyio.open_process(command, stderr=None))

    async def call(self, run: Run, ctx: JobContext) -> Returned | Raised:
        """Send one job and relay its progress until it returns or raises.

        Raises:
            anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, msgspec.DecodeError:
                the child died or broke the protocol.
        """
        await self._stdin.send(self._greeting + frame(run))
        self._greeting = b""
        while True:
            reply = await self._receive()
            if not isinstance(reply, Progress):
                return reply
            ctx.progress(reply.percent, reply.message)

    async def _receive(self) -> ToParent:
        (size,) = HEADER.unpack(await self._stdout.receive_exactly(HEADER.size))
        return TO_PARENT.decode(await self._stdout.receive_exactly(size))

    async def stop(self, grace: float, *, terminate: bool = True) -> int:
        """SIGTERM (unless ``terminate`` is false), SIGKILL after ``grace`` seconds, wait until gone.

        Shielded: it runs when the job is being cancelled, and must finish all the same.
        Returns the exit code (negative: the signal that ended it).
        """
        with anyio.CancelScope(shield=True):
            if terminate:
                self._signal(self.process.terminate)
            with anyio.move_on_after(grace):
                await self.process.wait()
            self._signal(self.process.kill)
            await self.process.aclose()
        assert self.process.returncode is not None, "aclose() waits for the process to exit"
        return self.process.returncode

    def _signal(self, send) -> None:
        if self.process.returncode is None:
            with suppress(ProcessLookupError):  # it exited between the check and the signal
                send()


class ChildPool:
    """The children of one bot (one event loop), idle ones most recently used last."""

    def __init__(self) -> None:
        self._idle: list[_Child] = []

    async def run(self, spec: str, args: dict[str, Any], ctx: JobContext) -> Any:
        """Run ``spec`` (``module:function``) on ``args`` in a child; see :func:`run_isolated`."""
        child = await self._checkout()
        run = Run(spec=spec, args=args, job=ctx.job, attempt=ctx.attempt, bot=ctx.bot)
        try:
            reply = await child.call(run, ctx)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, msgspec.DecodeError):
            code = await child.stop(KILL_GRACE, terminate=False)
            raise HandlerProcessError(f"the handler's process died (exit code {code}); see the bot's log") from None
        except BaseException:
            # Cancelled (corral cancel, the timeout, a drain): the process must be gone before the
            # job ends, or a retry could run beside it. Cancellation is re-raised.
            await child.stop(KILL_GRACE)
            raise
        child.idle_since = anyio.current_time()
        self._idle.append(child)
        if isinstance(reply, Raised):
            raise _exception(reply)
        return reply.value

    async def _checkout(self) -> _Child:
        now = anyio.current_time()
        stale = [c for c in self._idle if c.process.returncode is not None or now - c.idle_since > IDLE_SECONDS]
        for child in stale:
            self._idle.remove(child)
            await child.stop(0)
        return self._idle.pop() if self._idle else await _Child.spawn()


def _exception(raised: Raised) -> BaseException:
    """The handler's own exception when it survived pickling, else one that reads the same."""
    if raised.pickled is not None:
        with suppress(Exception):
            return pickle.loads(raised.pickled)
    return HandlerProcessError(f"{raised.exc_type}: {raised.message}")


_pool: RunVar[ChildPool] = RunVar("corral_child_pool")


async def run_isolated(spec: str, args: dict[str, Any], ctx: JobContext) -> Any:
    """Run the sync handler ``spec`` in a child process of this bot; what it returns.

    ``ctx.progress`` calls in the child reach ``ctx.progress`` here; the child's context has no
    ``js`` (so no ``ctx.lock``). The pool is per event loop, like anyio's own worker pools.

    Raises:
        Exception: what the handler raised (HandlerProcessError if it cannot be rebuilt here).
        HandlerProcessError: the child died (os._exit, a signal, a crash in C code).
        anyio cancellation: re-raised once the child is gone.
    """
    try:
        pool = _pool.get()
    except LookupError:
        pool = ChildPool()
        _pool.set(pool)
    return await pool.run(spec, args, ctx)
