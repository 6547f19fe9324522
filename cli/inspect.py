"""`corral status` and `corral job ID`: what the system and one job look like."""

from __future__ import annotations

import argparse
import datetime as dt

import anyio
import msgspec
from rich.console import Console
from rich.table import Table

from corral.cli.common import add_json, add_server, print_json, run, settings
from corral.core.connect import connect
from corral.core.dlq import list_dead
from corral.core.history import job_events, job_result
from corral.core.log import get_logger
from corral.core.messages import TERMINAL_EVENTS, Event
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
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true",
                   help="print events (progress included) as they happen until the job ends; with --json, one object per line")
    p.set_defaults(func=cmd_job)


FOLLOW_INTERVAL = 0.5  #: seconds between reads of a followed job's events


def _ts(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if t else "-"


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
    for col in ("consumer", "pending", "in flight", "redelivered", "waiting pulls", "max in flight"):
        t.add_column(col)
    for c in snap.consumers:
        t.add_row(c.name, str(c.pending), str(c.in_flight), str(c.redelivered), str(c.waiting), str(c.max_ack_pending))
    console.print(t)
    t = Table(title=f"bots ({len(snap.bots)} live)")
    for col in ("bot", "state", "host", "pid", "heartbeat age", "running", "done", "failed", "version"):
        t.add_column(col)
    for b in snap.bots:
        t.add_row(b.name, b.state, b.host, str(b.pid), f"{b.heartbeat_age:.1f}s", str(b.current), str(b.done), str(b.failed), b.version)
    console.print(t)
    return 0


def _event_row(e: Event) -> tuple[str, str, str, str, str]:
    return (_ts(e.ts), e.type, str(e.attempt or ""), e.bot or e.actor or "",
            e.detail or (f"{e.duration * 1000:.1f} ms" if e.duration else ""))


async def _follow(args: argparse.Namespace, job_id: str) -> int:
    """Print the job's events as they are stored, until it ends (Ctrl-C stops earlier)."""
    nc = await connect(settings(args), get_logger("job"), wait=False)
    seen, result = 0, None
    try:
        js = nc.jetstream()
        if not args.json:
            print(f"following job {job_id} (Ctrl-C stops)", flush=True)
        while True:
            events = await job_events(js, job_id)
            for e in events[seen:]:
                if args.json:
                    print(msgspec.json.encode(e).decode(), flush=True)
                else:
                    print("  ".join(c for c in _event_row(e) if c), flush=True)
            seen = len(events)
            result = await job_result(js, job_id)
            if result is not None or any(e.type in TERMINAL_EVENTS for e in events):
                break
            await anyio.sleep(FOLLOW_INTERVAL)
    finally:
        await nc.close()
    if result is not None and not args.json:
        print(f"result: {msgspec.json.encode(result.value).decode()}  (bot {result.bot}, attempt {result.attempt})")
    return 0


async def _job(args: argparse.Namespace) -> int:
    job_id = check_token(args.job_id, "job id")
    if args.follow:
        return await _follow(args, job_id)
    nc = await connect(settings(args), get_logger("job"), wait=False)
    try:
        js = nc.jetstream()
        events = await job_events(js, job_id)
        result = await job_result(js, job_id)
        dead = await list_dead(js, match=lambda d: d.job_id == job_id)
    finally:
        await nc.close()
    if args.json:
        print_json({
            "id": job_id,
            "events": [msgspec.to_builtins(e) for e in events],
            "result": msgspec.to_builtins(result) if result else None,
            "dead_letters": [{"seq": d.seq, "reason": d.reason, "attempts": d.attempts, "bots": d.bots, "dead_at": d.dead_at} for d in dead],
        })
        return 0 if (events or result or dead) else 1
    if not (events or result or dead):
        print(f"no record of job {job_id} (unknown id, still pending, or past the streams' retention)")
        return 1
    console = Console()
    t = Table(title=f"job {job_id}")
    for col in ("time (UTC)", "event", "attempt", "bot", "detail"):
        t.add_column(col)
    for e in events:
        t.add_row(*_event_row(e))
    console.print(t)
    if result:
        console.print(f"result: {msgspec.json.encode(result.value).decode()}  (bot {result.bot}, attempt {result.attempt}, {(result.finished_at - result.started_at) * 1000:.1f} ms)")
    for d in dead:
        console.print(f"dead letter #{d.seq}: {d.reason} (attempts {d.attempts}{', bots ' + d.bots if d.bots else ''})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return run(_status, args)


def cmd_job(args: argparse.Namespace) -> int:
    return run(_job, args)
