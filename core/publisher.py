"""Pipelined JetStream publishing with a deadline on every acknowledgement.

nats-py's ``publish_async`` returns a future that never completes if the server
never answers, and its pending-semaphore then blocks every later publish. This
wrapper gives each future a deadline: a sweep fails overdue ones with
``TimeoutError`` (which releases the semaphore) so callers always get an answer.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import anyio
from nats.js import JetStreamContext

from core.log import Logger


class AsyncPublisher:
    """``publish()`` returns a future of the PubAck; ``fire()`` logs failures instead."""

    def __init__(self, js: JetStreamContext, log: Logger, *, ack_timeout: float = 10.0) -> None:
        self.js = js
        self.log = log
        self.ack_timeout = ack_timeout
        self._pending: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self.lost = 0

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> asyncio.Future:
        fut = await self.js.publish_async(subject, data, headers=headers)
        self._pending.append((time.monotonic() + self.ack_timeout, fut))
        return fut

    async def fire(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish without waiting; a refusal or a missing ack is logged and counted."""
        fut = await self.publish(subject, data, headers)
        fut.add_done_callback(lambda f, s=subject: self._report(f, s))

    def _report(self, fut: asyncio.Future, subject: str) -> None:
        if fut.cancelled():
            exc: BaseException | None = TimeoutError("no ack")
        else:
            exc = fut.exception()
        if exc is not None:
            self.lost += 1
            self.log.warning("publish.lost", subject=subject, error=str(exc) or type(exc).__name__)

    def expire(self) -> None:
        """Fail every future past its deadline (call periodically)."""
        now = time.monotonic()
        while self._pending and (self._pending[0][1].done() or self._pending[0][0] < now):
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(TimeoutError(f"no JetStream ack within {self.ack_timeout}s"))

    async def run_expiry(self, interval: float = 0.5) -> None:
        """The sweep, as a task for the owner's task group."""
        while True:
            await anyio.sleep(interval)
            self.expire()

    async def flush(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for every outstanding publish to be answered."""
        futs = [f for _, f in self._pending if not f.done()]
        if futs:
            await asyncio.wait(futs, timeout=timeout)
        self.expire()


async def wait_ack(fut: asyncio.Future, timeout: float) -> Any:
    """Await a publish future with a deadline (``TimeoutError`` past it)."""
    with anyio.fail_after(timeout):
        return await asyncio.shield(fut)
