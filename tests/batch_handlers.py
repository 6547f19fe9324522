"""Batch handlers for the batch tests, registered on test bots with ``--handler KIND=tests.batch_handlers:FN@batch...``.

They tell the test what they saw through files named in the jobs' args.
"""

from __future__ import annotations

import os

import anyio

from corral.core.handlers import BatchItem, JobContext


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, f"{line}\n".encode())  # one small O_APPEND write: never seen half-written
    os.close(fd)


async def double(items: list[BatchItem], ctx: JobContext) -> list:
    """Each item's ``n`` doubled, or a ValueError for an item with ``bad``; logs the batch's size to ``sizes``."""
    _append(items[0].args["sizes"], str(len(items)))
    return [ValueError(f"bad item {i.args['n']}") if i.args.get("bad") else 2 * i.args["n"] for i in items]


async def gate(items: list[BatchItem], ctx: JobContext) -> list:
    """Logs ``size pid`` to ``entered``, then waits until the file ``release`` exists; each item's ``n``."""
    _append(items[0].args["entered"], f"{len(items)} {os.getpid()}")
    while not await anyio.Path(items[0].args["release"]).exists():  # noqa: ASYNC110 - a file the test writes: no event to wait on
        await anyio.sleep(0.05)
    return [i.args["n"] for i in items]


async def short(items: list[BatchItem], ctx: JobContext) -> list:
    """Returns one result too few."""
    return [1] * (len(items) - 1)
