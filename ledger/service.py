"""`corral ledger`: the process that owns the DuckDB file, feeds it and answers queries.

One anyio task group holds a signal task, one ingest loop per stream, the
periodic Parquet export, and the nats.micro query service. Stop order on
SIGTERM/SIGINT, and why:

1. stop pulling: each ingest loop finishes the batch in hand (commit, then ack),
   so nothing written is left unacked and nothing acked is unwritten;
2. a last Parquet export, while the data is complete;
3. stop the query service (queries need the store, which closes next);
4. drain the connection, which flushes the acks still in the client's buffer;
5. close DuckDB, which checkpoints the WAL into the file.

A second signal does not cut this short: every step is bounded (a batch, one
export, a drain with a timeout).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from corral.core.connect import connect, wait_for_resources
from corral.ledger.errors import SnapshotError
from corral.ledger.export import ceilings, export_all
from corral.ledger.ingest import BatchPolicy, StreamIngest
from corral.core.names import LEDGER_CONSUMERS as CONSUMERS
from corral.ledger.query import QueryService
from corral.ledger.store import LedgerStore
from corral.core.log import Logger
from corral.core.settings import Settings


@dataclass(frozen=True)
class LedgerConfig:
    """Everything `corral ledger` is told, resolved once at the entry point."""

    db: Path
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    query_timeout: float = 10.0  #: seconds before a query is interrupted
    max_rows: int = 10_000  #: hard cap on rows per reply
    parquet_dir: Path | None = None
    parquet_every: float = 300.0  #: seconds between exports


class Ledger:
    """The ledger service, usable as a library: ``await Ledger(settings, config, log).run()``.

    ``on_committed(batches)`` is called after each commit and before its ack
    (tests use it to crash in exactly that gap).
    """

    def __init__(self, settings: Settings, config: LedgerConfig, log: Logger, *,
                 on_committed: Callable[[int], None] = lambda n: None) -> None:
        self.settings = settings.named("corral-ledger")
        self.config = config
        self.log = log
        self.on_committed = on_committed
        self.stopping: anyio.Event | None = None
        self.ingests: list[StreamIngest] = []

    def stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code.

        Raises:
            LedgerLockedError: another process holds the file.
            SnapshotError: the file is a time-travel snapshot (built with --until).
        """
        stopping = self.stopping = anyio.Event()  # an Event needs the running loop: made here, not in __init__
        store = LedgerStore(self.config.db, export_dir=self.config.parquet_dir)
        try:
            if until := store.meta("until"):
                raise SnapshotError(
                    f"{self.config.db} is a snapshot as of {until}: live ingest would skip what came after. "
                    "Query it with `corral query --db`, or rebuild it without --until"
                )
            await self._serve(store, stopping)
        finally:
            store.close()
            self.log.info("ledger.closed", db=str(self.config.db))
        return 0

    async def _serve(self, store: LedgerStore, stopping: anyio.Event) -> None:
        nc = self.nc = await connect(self.settings, self.log)
        queries = QueryService(store, self.log, timeout=self.config.query_timeout, max_rows=self.config.max_rows)
        try:
            js = nc.jetstream()
            await wait_for_resources(js, self.log, list(CONSUMERS), list(CONSUMERS.items()))
            self.ingests = [
                StreamIngest(js, store, stream, consumer, self.log, self.config.policy, self.on_committed)
                for stream, consumer in CONSUMERS.items()
            ]
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals, tg.cancel_scope)
                await queries.start(nc)
                self.log.info("ledger.ready", db=str(self.config.db), consumers=",".join(CONSUMERS.values()))
                async with anyio.create_task_group() as ingest:
                    for loop in self.ingests:
                        ingest.start_soon(loop.run, stopping)
                    if self.config.parquet_dir:
                        ingest.start_soon(self._export_loop, js, store, stopping)
                await self._export(js, store)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await queries.stop()
                with anyio.move_on_after(5):
                    await nc.drain()
                self.log.info("ledger.stopped", **self.totals())

    def totals(self) -> dict[str, int]:
        return {
            "messages": sum(i.stats.messages for i in self.ingests),
            "rows": sum(i.stats.rows for i in self.ingests),
            "skipped": sum(i.stats.skipped for i in self.ingests),
        }

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info("ledger.signal", signal=signal.Signals(signum).name)
                self.stop()

    async def _export_loop(self, js, store: LedgerStore, stopping: anyio.Event) -> None:
        while not stopping.is_set():
            with anyio.move_on_after(self.config.parquet_every):
                await stopping.wait()
            if not stopping.is_set():
                await self._export(js, store)

    async def _export(self, js, store: LedgerStore) -> None:
        if not self.config.parquet_dir:
            return
        # A PING/PONG round trip first, so the server has processed the acks we sent (the ceiling is their floor).
        await self.nc.flush()
        ceiling = await ceilings(js)
        dir_ = self.config.parquet_dir
        files = await anyio.to_thread.run_sync(lambda: export_all(store, dir_, ceiling))
        if files:
            self.log.info("ledger.exported", files=len(files), dir=str(self.config.parquet_dir))
