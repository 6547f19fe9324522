"""`corral ledger`, `corral query`, `corral report`: the analytics ledger from the command line.

    corral ledger --db ledger.duckdb [--parquet DIR]    run the service (SIGTERM stops it cleanly)
    corral ledger --db ledger.duckdb --rebuild [--until 2026-11-23T16:00Z]
    corral ledger --db ledger.duckdb --export DIR       one-off Parquet export (service stopped)
    corral query "SELECT ..." [--format table|csv|json] [--db FILE]
    corral report durations [--format ...]

`query` and `report` go through the running service over NATS (the service
holds DuckDB's single-writer lock); ``--db`` reads a file directly instead,
e.g. a time-travel snapshot, when no process holds it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console
from rich.table import Table

from corral.cli.common import add_server, positive_float, positive_int, run, settings
from corral.core.connect import connect
from corral.core.errors import ConfigError
from corral.ledger.reports import REPORTS
from corral.core.log import get_logger

if TYPE_CHECKING:  # the annotations only: DuckDB stays out of commands that do not use it
    from corral.ledger.query import QueryReply

FORMATS = ("table", "csv", "json")


def register(sub) -> None:
    p = sub.add_parser("ledger", help="run the analytics ledger: streams -> DuckDB, read-only SQL over NATS")
    add_server(p)
    p.add_argument("--db", type=Path, required=True, help="the DuckDB file this process owns")
    p.add_argument("--rebuild", action="store_true", help="rebuild the file from the streams, then exit")
    p.add_argument("--until", type=_iso_time, metavar="TIME",
                   help="with --rebuild: only messages stored at or before TIME (ISO-8601, UTC if no offset)")
    p.add_argument("--export", type=Path, metavar="DIR", help="write new rows as day-partitioned Parquet to DIR, then exit")
    p.add_argument("--parquet", type=Path, metavar="DIR", help="while serving, export Parquet to DIR periodically and on shutdown")
    p.add_argument("--parquet-every", type=positive_float, default=300.0, help="seconds between exports (default 300)")
    p.add_argument("--batch", type=positive_int, default=1000, help="max messages per transaction (default 1000)")
    p.add_argument("--linger-ms", type=positive_int, default=200, help="max wait to fill a batch, ms (default 200)")
    p.add_argument("--query-timeout", type=positive_float, default=10.0, help="seconds before a query is interrupted (default 10)")
    p.add_argument("--max-rows", type=positive_int, default=10_000, help="row cap per query reply (default 10000)")
    # Fault injection for the crash tests: exit hard right after the Nth commit, before its acks.
    p.add_argument("--crash-after-commits", type=positive_int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("query", help="run read-only SQL on the ledger")
    add_server(p)
    p.add_argument("sql", metavar="SQL", help="one read-only SELECT, e.g. \"SELECT kind, count(*) FROM results GROUP BY kind\"")
    _output_options(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("report", help="a canned ledger report: " + ", ".join(REPORTS))
    add_server(p)
    p.add_argument("name", choices=sorted(REPORTS), metavar="NAME", help="one of: " + ", ".join(sorted(REPORTS)))
    _output_options(p)
    p.set_defaults(func=cmd_report)


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--max-rows", type=positive_int, default=1000, help="rows to return at most (default 1000)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for the service (default 30)")
    p.add_argument("--db", type=Path, help="read this DuckDB file directly instead of asking the service")


def _iso_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time (e.g. 2026-11-23T16:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# -- ledger ------------------------------------------------------------------------------------


def cmd_ledger(args: argparse.Namespace) -> int:
    # DuckDB is imported only by the commands that use it: `corral bot` shares this CLI and
    # would otherwise carry it (about 20 MB per bot).
    from corral.ledger.ingest import BatchPolicy
    from corral.ledger.service import Ledger, LedgerConfig
    if args.until and not args.rebuild:
        raise ConfigError("--until only applies to --rebuild (time travel builds a snapshot file)")
    log = get_logger("ledger")
    if args.rebuild:
        return run(_rebuild, args, log)
    if args.export:
        return run(_export, args, log)
    config = LedgerConfig(
        db=args.db, policy=BatchPolicy(batch_size=args.batch, linger=args.linger_ms / 1000),
        query_timeout=args.query_timeout, max_rows=args.max_rows, parquet_dir=args.parquet, parquet_every=args.parquet_every,
    )
    crash_at = args.crash_after_commits

    def on_committed(batches: int) -> None:
        if crash_at and batches >= crash_at:
            log.warning("ledger.fault_injected", after_commits=batches)
            os._exit(137)

    return run(Ledger(settings(args), config, log, on_committed=on_committed).run)


async def _rebuild(args: argparse.Namespace, log) -> int:
    from corral.ledger.rebuild import rebuild
    nc = await connect(settings(args), log, wait=False)
    try:
        counts = await rebuild(nc.jetstream(), args.db, log, until=args.until)
    finally:
        await nc.close()
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


async def _export(args: argparse.Namespace, log) -> int:
    from corral.ledger.export import ceilings, export_all
    from corral.ledger.store import LedgerStore
    store = LedgerStore(args.db, export_dir=args.export)
    try:
        if until := store.meta("until"):
            raise ConfigError(f"{args.db} is a snapshot as of {until}: export from the live ledger file")
        # The ack floors of the ledger's consumers bound the export (see ledger/export.py).
        nc = await connect(settings(args), log, wait=False)
        try:
            ceiling = await ceilings(nc.jetstream())
        finally:
            await nc.close()
        files = export_all(store, args.export, ceiling)
    finally:
        store.close()
    print(f"wrote {len(files)} file(s) under {args.export}")
    return 0


# -- query and report --------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    _print(_answer(args, args.sql), args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    report = REPORTS[args.name]
    if args.format == "table":
        Console(stderr=True).print(f"[bold]{report.name}[/]: {report.title}")
    _print(_answer(args, report.sql), args.format)
    return 0


def _answer(args: argparse.Namespace, sql: str) -> QueryReply:
    """Ask the service, or read ``--db`` directly (QueryError exits 1 via the CLI's CorralError handler)."""
    from corral.ledger.client import ask
    from corral.ledger.query import QueryReply, run_with_timeout
    from corral.ledger.store import LedgerStore
    if args.db:
        if not args.db.exists():
            raise ConfigError(f"{args.db} does not exist")
        store = LedgerStore(args.db)
        try:
            r = run_with_timeout(store, sql, max_rows=args.max_rows, timeout=args.timeout)
        finally:
            store.close()
        return QueryReply(columns=r.columns, types=r.types, rows=[list(x) for x in r.rows], truncated=r.truncated)

    async def remote() -> QueryReply:
        nc = await connect(settings(args), get_logger("query"), wait=False)
        try:
            return await ask(nc, sql, max_rows=args.max_rows, timeout=args.timeout)
        finally:
            await nc.close()

    return run(remote)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e15 else str(v)
    if isinstance(v, (dict, list)):
        return msgspec.json.encode(v).decode()
    return str(v)


def _print(reply: QueryReply, fmt: str) -> None:
    if fmt == "json":
        out = [dict(zip(reply.columns, row, strict=True)) for row in reply.rows]
        sys.stdout.write(msgspec.json.encode(out, enc_hook=str).decode() + "\n")
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(reply.columns)
        w.writerows([[_cell(v) for v in row] for row in reply.rows])
    else:
        t = Table(show_edge=False)
        for col, type_ in zip(reply.columns, reply.types, strict=True):
            t.add_column(col, justify="right" if type_ in _NUMERIC else "left")
        for row in reply.rows:
            t.add_row(*(_cell(v) for v in row))
        Console(width=max(Console().width, 160) if not sys.stdout.isatty() else None).print(t)
        note = f"{len(reply.rows)} row(s)" + (" (truncated: raise --max-rows or narrow the query)" if reply.truncated else "")
        Console(stderr=True).print(note)
    if reply.truncated and fmt != "table":
        print(f"corral: output truncated at {len(reply.rows)} rows", file=sys.stderr)


_NUMERIC = {"BIGINT", "INTEGER", "DOUBLE", "HUGEINT", "SMALLINT", "TINYINT", "UBIGINT", "FLOAT"} | {
    f"DECIMAL({p},{s})" for p in range(1, 39) for s in range(10)
}
