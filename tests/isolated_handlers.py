"""Sync handlers for the process-isolation tests, registered on test bots with ``--handler KIND=tests.isolated_handlers:FN@process``.

They run in a bot's child process, so they tell the test about themselves through files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from corral.core.handlers import HandlerCancelled, JobContext


def add(args: dict, ctx: JobContext) -> dict:
    """``a + b``, and the pid of the process that computed it; reports 50% on the way."""
    ctx.progress(50, "adding")
    return {"sum": args["a"] + args["b"], "pid": os.getpid()}


def hang(args: dict, ctx: JobContext) -> None:
    """Never returns. Appends its pid to ``pid_file`` (one line per attempt) and reports progress.

    On HandlerCancelled it writes ``cancelled`` to ``marker`` (if given) and stops, unless
    ``stubborn``: then it ignores the cancellation and must be killed.
    """
    fd = os.open(args["pid_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, f"{os.getpid()}\n".encode())  # one small O_APPEND write: never seen half-written
    os.close(fd)
    beats = 0
    while True:
        try:
            time.sleep(0.1)
            beats += 1
            ctx.progress(min(beats, 99), f"beat {beats}")
        except HandlerCancelled:
            if args.get("marker"):
                Path(args["marker"]).write_text("cancelled")
            if not args.get("stubborn"):
                raise


def boom(args: dict, ctx: JobContext) -> None:
    """Raises ValueError(``message``)."""
    raise ValueError(args.get("message", "boom"))


def die(args: dict, ctx: JobContext) -> None:
    """Ends its own process at once, as a crash in C code would."""
    os._exit(int(args.get("code", 70)))


async def async_add(args: dict, ctx: JobContext) -> int:
    """An async handler, which @process refuses."""
    return args["a"] + args["b"]
