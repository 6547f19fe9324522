"""Live ingest: one durable pull consumer per stream, batched, commit THEN ack.

Per stream, a loop collects up to ``batch_size`` messages or whatever arrived
within ``linger`` seconds of the first, writes them in one DuckDB transaction,
and only after the commit acks them. A crash before the commit loses nothing
(the messages are redelivered after the consumer's ``ack_wait``); a crash
between commit and ack redelivers rows already written, which the primary keys
turn into no-ops. A failed write is not retried here: it propagates, the
ledger exits, and a restart resumes from the first unacked message.

Rows are therefore not committed in stream order across a crash: redelivered
messages arrive after newer ones. Nothing here depends on order; the Parquet
export bounds itself by the consumer's ack floor for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import stamina
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from corral.core.connect import TRANSIENT
from corral.ledger.rows import Delivered, rows_for
from corral.ledger.store import LedgerStore
from corral.core.log import Logger


@dataclass(frozen=True)
class BatchPolicy:
    """How a batch closes: ``batch_size`` messages, or ``linger`` seconds after its first message."""

    batch_size: int = 1000
    linger: float = 0.2  #: seconds
    idle_fetch: float = 1.0  #: seconds a fetch waits on an idle stream (bounds how fast a stop is noticed)


@dataclass
class Stats:
    messages: int = 0
    rows: int = 0
    batches: int = 0
    skipped: int = 0


def _reconnecting(e: Exception) -> bool:
    """Worth retrying a fetch: the connection is down or JetStream is electing (not a plain empty fetch)."""
    # nats-py raises its own TimeoutError for an empty fetch, and sometimes asyncio's bare one
    # (a builtin TimeoutError in 3.11): both only mean "nothing arrived in time".
    return isinstance(e, TRANSIENT) and not isinstance(e, TimeoutError)


class StreamIngest:
    """Feeds one stream's durable consumer into the store."""

    def __init__(
        self,
        js: JetStreamContext,
        store: LedgerStore,
        stream: str,
        consumer: str,
        log: Logger,
        policy: BatchPolicy = BatchPolicy(),
        on_committed: Callable[[int], None] = lambda batches: None,
    ) -> None:
        self.js = js
        self.store = store
        self.stream = stream
        self.consumer = consumer
        self.log = log.bind(source=stream)
        self.policy = policy
        self.on_committed = on_committed
        self.stats = Stats()

    async def run(self, stopping: anyio.Event) -> None:
        """Ingest until ``stopping`` is set; the batch in hand is always committed and acked first."""
        sub = await self.js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
        try:
            while not stopping.is_set():
                batch = await self._collect(sub, stopping)
                if batch:
                    await self._commit_then_ack(batch)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _collect(self, sub, stopping: anyio.Event) -> list[Msg]:
        batch: list[Msg] = []
        deadline = float("inf")
        while len(batch) < self.policy.batch_size and not stopping.is_set():
            wait = self.policy.idle_fetch if not batch else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                msgs = await self._fetch(sub, self.policy.batch_size - len(batch), max(wait, 0.02))
            except TimeoutError:  # nothing arrived in time (see _reconnecting)
                if batch:
                    break
                continue
            if not batch:
                deadline = time.monotonic() + self.policy.linger
            batch.extend(msgs)
        return batch

    async def _fetch(self, sub, n: int, timeout: float) -> list[Msg]:
        """One fetch; while the connection is down, retried with backoff (an empty fetch is not an error)."""
        async for attempt in stamina.retry_context(on=_reconnecting, attempts=None, timeout=None, wait_max=2.0):
            with attempt:
                if attempt.num > 1:
                    self.log.warning("ledger.fetch_retry", attempt=attempt.num)
                return await sub.fetch(n, timeout=timeout)
        raise AssertionError("unreachable: retries are unbounded")

    async def _commit_then_ack(self, batch: list[Msg]) -> None:
        started = time.perf_counter()
        rows = rows_for([Delivered.from_msg(m) for m in batch])
        # A worker thread, not cancellable: once a commit has started it finishes.
        await anyio.to_thread.run_sync(self.store.write, rows)
        self.stats.batches += 1
        self.on_committed(self.stats.batches)
        for m in batch:
            await m.ack()
        self.stats.messages += len(batch)
        self.stats.rows += len(rows)
        self.stats.skipped += rows.skipped
        if rows.skipped:
            self.log.warning("ledger.undecodable", skipped=rows.skipped)
        self.log.info(
            "ledger.batch", msgs=len(batch), rows=len(rows), first=batch[0].metadata.sequence.stream,
            last=batch[-1].metadata.sequence.stream, ms=round((time.perf_counter() - started) * 1000, 1),
        )
