"""Rebuilding the ledger from what the streams still hold, optionally as of a moment (time travel).

Each stream is read from its first message with an ephemeral pull consumer
(``ack_policy=none``, in memory, removed afterwards and by the server after
``inactive_threshold`` if we die): it never touches the ledger's durables, so
the live service's position is unaffected. The read stops at the stream's last
sequence as of the start, or at the first message stored after ``until``.

The new tables are built in a side file and swapped in with one rename, so a
crash mid-rebuild leaves the old file intact. Because the live ingest and the
rebuild share :func:`corral.ledger.rows.rows_for` and key every row on stream
sequences, the rebuilt tables equal the live ones for what the streams hold.
What retention removed (results and events past 7 days, dead letters replayed
or purged) is gone from a rebuild: that is the price of starting from the streams.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from corral.core.names import LEDGER_CONSUMERS as CONSUMERS
from corral.core.names import STREAM_SUBJECTS
from corral.ledger.rows import Delivered, rows_for
from corral.ledger.store import LedgerStore
from corral.core.log import Logger


async def replay_stream(js: JetStreamContext, store: LedgerStore, stream: str, *, until: dt.datetime | None, batch_size: int = 1000) -> int:
    """Write every message of ``stream`` (stored at or before ``until``) into ``store``; returns how many."""
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return 0
    last = info.state.last_seq
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0,
        mem_storage=True, num_replicas=1, description="corral ledger rebuild (ephemeral)",
    )
    sub = await js.pull_subscribe(STREAM_SUBJECTS[stream], stream=stream, config=config)
    done = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(batch_size, timeout=2.0)
            except TimeoutError:  # nats-py's or asyncio's: nothing arrived in time
                if (await sub.consumer_info()).num_pending == 0:
                    return done
                continue
            keep = [Delivered.from_msg(m) for m in msgs if until is None or m.metadata.timestamp <= until]
            if keep:
                await anyio.to_thread.run_sync(store.write, rows_for(keep))
                done += len(keep)
            tail = msgs[-1].metadata
            if len(keep) < len(msgs) or tail.sequence.stream >= last or tail.num_pending == 0:
                return done
    finally:
        with anyio.CancelScope(shield=True):
            await _remove(js, sub, stream)


async def _remove(js: JetStreamContext, sub, stream: str) -> None:
    try:
        name = (await sub.consumer_info()).name
        await sub.unsubscribe()
        await js.delete_consumer(stream, name)
    except (nats.js.errors.NotFoundError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
        pass  # the server removes it after inactive_threshold anyway


def _side_file(path: Path) -> Path:
    return path.with_name(path.name + ".rebuild")


def _discard(db: Path) -> None:
    for p in (db, db.with_name(db.name + ".wal")):
        p.unlink(missing_ok=True)


async def rebuild(js: JetStreamContext, path: Path, log: Logger, *, until: dt.datetime | None = None) -> dict[str, int]:
    """Replace the ledger at ``path`` with one rebuilt from the streams; returns the new row counts.

    Raises:
        LedgerLockedError: another process (a running ledger service) holds ``path``.
    """
    LedgerStore(path).close()  # fails fast, with a clear message, if the service holds the file
    side = _side_file(path)
    _discard(side)
    store = LedgerStore(side)
    try:
        if until is not None:
            store.set_meta("until", until.isoformat())
        for stream in CONSUMERS:
            n = await replay_stream(js, store, stream, until=until)
            log.info("ledger.rebuilt_stream", stream=stream, messages=n)
        counts = store.counts()
    finally:
        store.close()
    # Drop the old file's WAL first: left beside the new file, DuckDB would replay it onto it.
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    os.replace(side, path)
    log.info("ledger.rebuilt", db=str(path), until=until.isoformat() if until else None, **counts)
    return counts
