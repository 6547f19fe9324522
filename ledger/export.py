"""Parquet export: immutable, day-partitioned files for analysts (no DuckDB lock involved).

Layout, one folder per table and day (Hive-style, so ``read_parquet(...,
hive_partitioning=true)`` and most engines see a ``day`` column)::

    DIR/results/day=2026-11-23/part-000000000001-000000000734.parquet
    DIR/events/day=2026-11-23/part-000000000001-000000004410.parquet

``<first>-<last>`` are the stream sequences a file holds. A file is written
once (to a temporary name, then renamed) and never rewritten; the next export
starts after the highest ``<last>`` already in ``DIR``, so the folder itself
is the watermark and exporting is idempotent.

Rows are NOT committed in stream order: after a crash the unacked messages
come back only after ``ack_wait``, while newer ones flow at once. So an export
stops at a *ceiling*: the ledger consumer's ack floor, below which every
message has been acked, hence committed (ack after commit). A late row can
then never land below the watermark.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nats.js import JetStreamContext

from corral.core.names import LEDGER_CONSUMERS as CONSUMERS
from corral.ledger.store import LedgerStore
from corral.core.names import EVENTS_STREAM, RESULTS_STREAM

#: Table -> the time column whose UTC day names the partition.
EXPORTS = {"results": "finished_at", "events": "ts"}
_STREAMS = {"results": RESULTS_STREAM, "events": EVENTS_STREAM}


async def ceilings(js: JetStreamContext) -> dict[str, int]:
    """Per exported table, the highest stream sequence below which everything is committed (the ack floor)."""
    out = {}
    for table, stream in _STREAMS.items():
        info = await js.consumer_info(stream, CONSUMERS[stream])
        out[table] = info.ack_floor.stream_seq if info.ack_floor else 0
    return out
_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")


def watermark(table_dir: Path) -> int:
    """The highest stream sequence already exported under ``table_dir`` (0 if none)."""
    best = 0
    for f in table_dir.glob("day=*/part-*.parquet"):
        m = _PART.match(f.name)
        if m:
            best = max(best, int(m.group(2)))
    return best


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_table(store: LedgerStore, out_dir: Path, table: str, time_col: str, ceiling: int) -> list[Path]:
    """Write the rows of ``table`` past the watermark and up to ``ceiling``, one new file per day.

    Returns the files written.
    """
    table_dir = out_dir / table
    after = watermark(table_dir)
    cur = store.cursor()
    days = cur.execute(
        f"SELECT coalesce(CAST({time_col} AS DATE), DATE '1970-01-01')::VARCHAR, min(seq), max(seq) FROM {table} "
        "WHERE seq > ? AND seq <= ? GROUP BY 1 ORDER BY 2",
        [after, ceiling],
    ).fetchall()
    high = max((last for _, _, last in days), default=after)
    written = []
    for day, first, last in days:
        final = table_dir / f"day={day}" / f"part-{first:012d}-{last:012d}.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name("." + final.name + ".tmp")
        cur.execute(
            f"COPY (SELECT * FROM {table} WHERE seq > {after} AND seq <= {high} "
            f"AND coalesce(CAST({time_col} AS DATE), DATE '1970-01-01') = DATE '{day}' "
            f"ORDER BY seq) TO {_quote(tmp)} (FORMAT parquet)"
        )
        os.replace(tmp, final)
        written.append(final)
    cur.close()
    return written


def export_all(store: LedgerStore, out_dir: Path, ceiling: dict[str, int]) -> list[Path]:
    """Export every table in :data:`EXPORTS` up to its ceiling (see :func:`ceilings`).

    ``out_dir`` must be the store's ``export_dir`` (the only folder DuckDB may write to).
    """
    return [
        f for table, col in EXPORTS.items()
        for f in export_table(store, out_dir.resolve(), table, col, ceiling.get(table, 0))
    ]
