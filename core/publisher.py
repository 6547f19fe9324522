"""Pipelined JetStream publishing with a deadline on every acknowledgement."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from corral.core.log import Logger
from corral.core.names import BATCH_COMMIT, BATCH_ID, BATCH_SEQUENCE
from corral.core.nats_client import CorralClient, subscribe_inline


class _Reply(msgspec.Struct):
    """A publish's reply: a PubAck's fields, or ``error``. Decoded with msgspec, several times
    cheaper than ``json.loads`` and ``PubAck.from_response`` on every result."""

    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    batch: str | None = None
    count: int | None = None
    val: str | None = None
    error: dict[str, Any] | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode


class AsyncPublisher:
    """Pipelined JetStream publishes: ``publish()`` returns a future of the PubAck.

    corral does not use nats-py's ``publish_async``: in 2.16 its reply handler
    calls ``APIError.from_error``, which *raises*, so a refused publish (a full
    stream, the result fence) never resolves its future and the error only
    reaches the connection's error callback. Here every reply resolves its
    future: a PubAck, or the API error as an exception; and every future has a
    deadline (``ack_timeout`` seconds), so nothing waits forever.
    """

    def __init__(
        self,
        js: JetStreamContext,
        log: Logger,
        *,
        ack_timeout: float = 10.0,
        max_pending: int = 4000,
        on_lost: Callable[[str, bytes, dict[str, str] | None], object] | None = None,
    ) -> None:
        self.js = js
        self.on_lost = on_lost
        self.nc = js._nc
        self.log = log
        self.ack_timeout = ack_timeout
        self._pending: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self._futures: dict[str, asyncio.Future] = {}
        self._slots = asyncio.Semaphore(max_pending)
        self._prefix: str | None = None
        self._tokens = itertools.count(1)  #: reply tokens: unique within the inbox, which is this publisher's
        self.lost = 0

    async def _ensure_inbox(self) -> str:
        if self._prefix is None:
            self._prefix = f"{self.nc.new_inbox()}."
            await subscribe_inline(self.nc, self._prefix + "*", self._on_reply)  # run in the read loop
        return self._prefix

    def _on_reply(self, msg) -> None:
        assert self._prefix is not None, "subscribed only once the prefix is set"
        fut = self._futures.pop(msg.subject[len(self._prefix):], None)
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            resp = _decode_reply(msg.data)
        except msgspec.DecodeError as e:
            fut.set_exception(ValueError(f"unreadable publish reply: {e}"))
            return
        if resp.error is not None:
            try:
                nats.js.errors.APIError.from_error(resp.error)  # raises the matching subclass
            except nats.js.errors.APIError as err:
                fut.set_exception(err)
            return
        # Built directly: PubAck.from_response walks the dataclass's fields on every call, a share
        # of a bot's CPU per result.
        fut.set_result(PubAck(stream=resp.stream, seq=resp.seq, domain=resp.domain, duplicate=resp.duplicate,
                              batch_id=resp.batch, batch_size=resp.count, val=resp.val))

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> asyncio.Future:
        prefix = await self._ensure_inbox()
        await self._slots.acquire()
        token = str(next(self._tokens))
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        fut.add_done_callback(self._release)
        self._futures[token] = fut
        self._pending.append((time.monotonic() + self.ack_timeout, fut))
        try:
            await self.nc.publish(subject, data, reply=prefix + token, headers=headers)
        except Exception as e:  # noqa: BLE001 - surfaced through the future
            self._futures.pop(token, None)
            fut.set_exception(e)
        return fut

    async def publish_batch(self, items: list[tuple[str, bytes, dict[str, str]]]) -> asyncio.Future:
        """Publish ``items`` (subject, data, headers) as one JetStream atomic batch: a future of the
        commit's PubAck, which answers for the whole batch (stored whole, or refused whole).

        Only the last message, the commit, asks for a reply (docs/nats-notes.md, "Atomic batch publish").

        Raises:
            nats.errors.Error, OSError: a member before the commit could not be sent.
        """
        batch_id = self.nc._nuid.next().decode()
        if isinstance(self.nc, CorralClient):
            await self.nc.publish_batch_members(items[:-1], batch_id)
        else:
            for n, (subject, data, headers) in enumerate(items[:-1], start=1):
                await self.nc.publish(subject, data, headers={**headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(n)})
        subject, data, headers = items[-1]
        return await self.publish(subject, data, {**headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(len(items)), BATCH_COMMIT: "1"})

    def _release(self, fut: asyncio.Future) -> None:
        self._slots.release()
        if not fut.cancelled():
            fut.exception()  # mark retrieved: the owner reports failures its own way

    async def fire(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish without waiting; a refusal or a missing ack goes to ``on_lost`` (or the log)."""
        fut = await self.publish(subject, data, headers)
        fut.add_done_callback(lambda f: self._report(f, subject, data, headers))

    def _report(self, fut: asyncio.Future, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        exc = TimeoutError("cancelled") if fut.cancelled() else fut.exception()
        if exc is None:
            return
        if self.on_lost is not None:
            self.on_lost(subject, data, headers)
            return
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
