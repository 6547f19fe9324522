"""Group commit of results: one fenced publish when idle, one atomic batch per round under load.

Under ``sync_interval: always`` every stored write costs the server an fsync, and a
bot's finished jobs each wait for their result's acknowledgement before they are
acked. Committing the results that finish close together as one JetStream atomic
batch makes that one fsync for the lot (docs/nats-notes.md, "Atomic batch publish").

An atomic batch is not free, though: on file storage the server flushes each commit to
disk, whatever its ``sync_interval`` (docs/nats-notes.md). Under ``sync_interval: always``,
corral's shipped setting, that is one fsync instead of one per result, a large gain. On a
server left at the default lazy fsync it is one fsync more than individual publishes pay,
so there a bot runs with ``--no-group-commit`` (``batching=False``): every result is
published at once, on its own, beside the others in flight.

The rule is latency first. A result that finds no commit in flight is published at
once, alone, as a plain fenced publish. While a commit is in flight the results that
finish meanwhile queue up; when it is answered, the first of them leads the next
round and commits everything queued (up to :data:`MAX_BATCH`) as one batch, or one by one,
pipelined, while fewer than :data:`MIN_BATCH` have queued. So an
idle bot never waits to batch, and a busy one batches exactly as much as its commit
latency lets pile up. There is no background task: the caller whose turn it is does
the round, and hands the lead to the next waiter when it is done.

Every result carries the cross-job fence (:func:`corral.core.names.result_fence`).
The server refuses a batch whole if any member is fenced, and refuses a batch for
other reasons too (a stream made before ``allow_atomic``, too large, too many in
flight). A refused batch falls back to individual, pipelined publishes, where only
the fenced result is refused. A batch that was not answered at all gives each member
the transport error, which the caller retries (bots/record.py): a batch is all or
nothing, so a retry finds either nothing or its own result stored.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from corral.core.connect import publish_error
from corral.core.errors import TransportError
from corral.core.names import BATCH_COMMIT, BATCH_ID, BATCH_SEQUENCE
from corral.core.publisher import AsyncPublisher, wait_ack

#: Results a round needs before it is committed as one atomic batch; a smaller round is published
#: one by one, pipelined. A batch commit has a fixed cost of its own on the server (it is staged
#: and flushed to disk as a whole), measured at several individual publishes' worth: below a
#: dozen or so results individual publishes finished sooner (docs/nats-notes.md, bench/commit_rate.py).
MIN_BATCH = 16

#: Results per atomic batch at most. The server allows 1,000; past a few hundred the gain is
#: small (docs/nats-notes.md) and a refused batch's fallback grows with it.
MAX_BATCH = 256


@dataclass(eq=False)
class _Result:
    subject: str
    data: bytes
    headers: dict[str, str]
    wake: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None
    finished: bool = False
    lead: bool = False  #: handed the next round while waiting


@dataclass
class CommitStats:
    singles: int = 0  #: results published one by one (alone, or in a round too small to batch)
    batches: int = 0  #: atomic batches committed
    batched: int = 0  #: results committed in those batches
    fallbacks: int = 0  #: refused batches whose results were published one by one
    direct: int = 0  #: results published on their own at once (group commit off)


class Committer:
    """Commits one bot's results: each caller learns its own result's fate."""

    def __init__(self, publisher: AsyncPublisher, max_batch: int = MAX_BATCH, batching: bool = True,
                 min_batch: int = MIN_BATCH) -> None:
        """``batching`` False: no group commit, every result is published at once on its own."""
        self.publisher = publisher
        self.max_batch = max(1, max_batch)
        self.min_batch = max(2, min_batch)
        self.batching = batching
        self.stats = CommitStats()
        self._queue: collections.deque[_Result] = collections.deque()
        self._leading = False

    async def commit(self, subject: str, data: bytes, headers: dict[str, str]) -> Exception | None:
        """Publish one result; None once it is stored, else the translated error (core/connect.py)."""
        if not self.batching:
            return await self._direct(subject, data, headers)
        item = _Result(subject, data, headers)
        self._queue.append(item)
        if self._leading:
            await self._wait(item)
            if item.finished:
                return item.error
            # Handed the lead: let the callers the last round just woke queue their next results first.
            await anyio.lowlevel.checkpoint()
        self._leading = True
        try:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            # Shielded: the round settles results of other callers too, and it is bounded by the ack timeout.
            with anyio.CancelScope(shield=True):
                if len(batch) >= self.min_batch:
                    await self._batch_round(batch)
                else:
                    self.stats.singles += len(batch)
                    await self._settle_each(batch, await self._send_each(batch))
        finally:
            self._hand_over()
        return item.error

    async def _direct(self, subject: str, data: bytes, headers: dict[str, str]) -> Exception | None:
        """Publish one result on its own, beside the others in flight."""
        self.stats.direct += 1
        fut = await self.publisher.publish(subject, data, headers)
        return await self._answer(fut, subject)

    async def _wait(self, item: _Result) -> None:
        """Wait until ``item`` is settled or handed the lead; a cancelled waiter leaves no gap."""
        try:
            await item.wake.wait()
        except BaseException:
            if item in self._queue:
                self._queue.remove(item)  # not taken by a round: it was never sent
                if item.lead:
                    self._hand_over()
            raise

    def _hand_over(self) -> None:
        """Give the next round to the first waiter, or stop leading."""
        if self._queue:
            nxt = self._queue[0]
            nxt.lead = True
            nxt.wake.set()
        else:
            self._leading = False

    @staticmethod
    def _settle(batch: list[_Result], errors: list[Exception | None]) -> None:
        for item, err in zip(batch, errors, strict=True):
            item.error, item.finished = err, True
            item.wake.set()

    async def _batch_round(self, batch: list[_Result]) -> None:
        """One atomic batch; refused, its results one by one (only a fenced one is refused then)."""
        err = await self._atomic(batch)
        if err is None or isinstance(err, TransportError):
            self._settle(batch, [err] * len(batch))
            return
        self.stats.fallbacks += 1
        futs = await self._send_each(batch)
        await self._settle_each(batch, futs)

    async def _send_each(self, batch: list[_Result]) -> list[asyncio.Future]:
        """Publish each result on its own, pipelined: the futures of their acknowledgements."""
        return [await self.publisher.publish(i.subject, i.data, i.headers) for i in batch]

    async def _settle_each(self, batch: list[_Result], futs: list[asyncio.Future]) -> None:
        self._settle(batch, [await self._answer(f, i.subject) for f, i in zip(futs, batch, strict=True)])

    async def _atomic(self, batch: list[_Result]) -> Exception | None:
        """One atomic batch: only the commit (the last message) asks for a reply, the PubAck of all."""
        batch_id = self.publisher.nc._nuid.next().decode()
        last = len(batch)
        try:
            for n, item in enumerate(batch[:-1], start=1):
                headers = {**item.headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(n)}
                await self.publisher.nc.publish(item.subject, item.data, headers=headers)
        except Exception as e:  # noqa: BLE001 - translated right here
            return publish_error(e, batch[0].subject)
        tail = batch[-1]
        fut = await self.publisher.publish(
            tail.subject, tail.data, {**tail.headers, BATCH_ID: batch_id, BATCH_SEQUENCE: str(last), BATCH_COMMIT: "1"},
        )
        err = await self._answer(fut, tail.subject)
        if err is None:
            self.stats.batches += 1
            self.stats.batched += last
        return err

    async def _answer(self, fut: asyncio.Future, subject: str) -> Exception | None:
        try:
            await wait_ack(fut, self.publisher.ack_timeout)
        except Exception as e:  # noqa: BLE001 - translated right here
            return publish_error(e, subject)
        return None
