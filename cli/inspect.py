"""`corral status` and `corral job ID`: what the system and one job look like."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import anyio
import msgspec
from rich.console import Console
from rich.table import Table

from corral.cli.common import add_json, add_server, print_json, run, settings
from corral.core import lookup
from corral.core.connect import connect
from corral.core.errors import NotFoundError
from corral.core.history import job_events, job_result
from corral.core.timeline import with_result
from corral.core.jobrecord import read_record
from corral.core.log import get_logger
from corral.core.messages import Event
from corral.core.names import check_token
from corral.core.status import snapshot


def register(sub) -> None:
    p = sub.add_parser("status", help="streams, consumer backlog and in-flight, live bots")
    add_server(p)
    add_json(p)
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("job", help="one job's whole history, result or dead-letter reason")
    add_server(p)
    add_json(p)
    p.add_argument("job_id", metavar="ID", help="the job id `corral submit` printed")
    p.add_argument("-f", "--follow", action="store_true",
                   help="print events (progress included) as they happen until the job ends; with --json, one object per line")
    p.set_defaults(func=cmd_job)


FOLLOW_INTERVAL = 0.5  #: seconds between reads of a followed job's events


def _name_column(t: Table, title: str, names: list[str]) -> None:
    """A first column that is never cut: names are what an operator types next (`corral pause ...`);
    on a narrow terminal the other columns wrap instead."""
    t.add_column(title, no_wrap=True, min_width=max([len(title), *map(len, names)]))


def _ts(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if t else "-"


async def _status(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger("status"), wait=False)
    try:
        snap = await snapshot(nc.jetstream())
    finally:
        await nc.close()
    if args.json:
        print_json(snap.as_dict())
        return 0
    console = Console()
    t = Table(title="streams")
    for col in ("stream", "messages", "bytes"):
        t.add_column(col, justify="right" if col != "stream" else "left")
    for s in snap.streams:
        t.add_row(s.name, str(s.messages) if s.present else "MISSING", str(s.bytes))
    console.print(t)
    t = Table(title="consumers")
    _name_column(t, "consumer", [c.name for c in snap.consumers])
    for col in ("pending", "in\nflight", "redelivered", "waiting\npulls", "max in\nflight"):  # two-line headers fit 80 columns
        t.add_column(col, justify="right")
    for c in snap.consumers:
        t.add_row(c.name, str(c.pending), str(c.in_flight), str(c.redelivered), str(c.waiting), str(c.max_ack_pending))
    console.print(t)
    t = Table(title=f"bots ({len(snap.bots)} live)")
    _name_column(t, "bot", [b.name for b in snap.bots])
    for col in ("state", "host", "pid", "heartbeat\nage", "running", "done", "failed", "version"):
        t.add_column(col)
    for b in snap.bots:
        t.add_row(b.name, b.state, b.host, str(b.pid), f"{b.heartbeat_age:.1f}s", str(b.current), str(b.done), str(b.failed), b.version)
    console.print(t)
    return 0


def _event_row(e: Event) -> tuple[str, str, str, str, str]:
    return (_ts(e.ts), e.type, str(e.attempt or ""), e.bot or e.actor or "",
            e.detail or (f"{e.duration * 1000:.1f} ms" if e.duration else ""))


FOLLOW_GRACE = 3.0  #: seconds `job --follow` waits for an unknown id to appear before giving up


def _no_record(job_id: str) -> NotFoundError:
    return NotFoundError(f"no record of job {job_id}: not scheduled, not waiting, no event or result "
                         "(unknown id, or past the streams' retention)")


async def _appeared(js, job_id: str) -> lookup.Whereabouts:
    """The job's whereabouts, waiting up to FOLLOW_GRACE for one just submitted elsewhere to show.

    Raises:
        NotFoundError: still no record of it.
    """
    deadline = anyio.current_time() + FOLLOW_GRACE
    while not (where := await lookup.locate(js, job_id)).known:
        if anyio.current_time() > deadline:
            raise _no_record(job_id)
        await anyio.sleep(FOLLOW_INTERVAL)
    return where


async def _follow(args: argparse.Namespace, job_id: str) -> int:
    """Print the job's events as they are stored, until it ends (Ctrl-C stops earlier)."""
    nc = await connect(settings(args), get_logger("job"), wait=False)
    printed: set[tuple] = set()
    result = None
    try:
        js = nc.jetstream()
        where = await _appeared(js, job_id)
        print(f"following job {job_id}, {where.state}{' ' + where.detail if where.detail else ''} (Ctrl-C stops)",
              file=sys.stderr, flush=True)
        while True:
            events = await job_events(js, job_id)
            result = await job_result(js, job_id)
            # The result's implied started/succeeded belong earlier in the trail by time, so what
            # was printed is remembered by content, and they are printed after the fresh events.
            fresh = [e for e in with_result(events, result) if _key(e) not in printed]
            fresh.sort(key=lambda e: e not in events)
            for e in fresh:
                printed.add(_key(e))
                if args.json:
                    print(msgspec.json.encode(e).decode(), flush=True)
                else:
                    print("  ".join(c for c in _event_row(e) if c), flush=True)
            if result is not None or lookup.ending(events):
                break
            await anyio.sleep(FOLLOW_INTERVAL)
    finally:
        await nc.close()
    if result is not None and not args.json:
        print(f"result: {msgspec.json.encode(result.value).decode()}  (bot {result.bot}, attempt {result.attempt})")
    return 0


def _key(e: Event) -> tuple:
    return (e.type, e.ts, e.attempt, e.incarnation, e.detail)


async def _job(args: argparse.Namespace) -> int:
    job_id = check_token(args.job_id, "job id")
    if args.follow:
        return await _follow(args, job_id)
    nc = await connect(settings(args), get_logger("job"), wait=False)
    try:
        rec = await read_record(nc.jetstream(), job_id)
    finally:
        await nc.close()
    events, result, dead = rec.events, rec.result, rec.dead
    if args.json:
        print_json(rec.as_dict())
    if not rec.known:
        raise _no_record(job_id)
    if args.json:
        return 0
    if rec.state in (lookup.SCHEDULED, lookup.PENDING, lookup.UNVERIFIED) and not dead:
        print({lookup.SCHEDULED: f"job {job_id} is scheduled ({rec.detail}): it is submitted when the schedule fires",
               lookup.PENDING: f"job {job_id} is pending on {rec.detail}: no bot has taken it yet",
               lookup.UNVERIFIED: f"job {job_id} has no event yet ({rec.detail})"}[rec.state])
        return 0
    if rec.state == lookup.ACTIVE and not events and not dead:
        print(f"job {job_id} is running: a bot holds its first delivery, which records no event until it ends")
        return 0
    console = Console()
    t = Table(title=f"job {job_id}")
    for col in ("time (UTC)", "event", "attempt", "bot", "detail"):
        t.add_column(col)
    for e in events:
        t.add_row(*_event_row(e))
    console.print(t)
    if result:
        took_ms = (result.finished_at - result.started_at) * 1000
        value = msgspec.json.encode(result.value).decode()
        console.print(f"result: {value}  (bot {result.bot}, attempt {result.attempt}, {took_ms:.1f} ms)")
    for d in dead:
        console.print(f"dead letter #{d.seq}: {d.reason} (attempts {d.attempts}{', bots ' + d.bots if d.bots else ''})")
    if rec.trace_id:
        console.print(f"trace: {rec.trace_id}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return run(_status, args)


def cmd_job(args: argparse.Namespace) -> int:
    return run(_job, args)
