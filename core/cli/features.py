"""`corral cancel ID` and `corral schedule add|list|rm`: job features beyond submit."""

from __future__ import annotations

import argparse

from core import schedules
from core.cancel import request_cancel
from core.cli.common import actor, add_json, add_server, positive_float, positive_int, print_json, run, settings
from core.cli.submit import parse_kv
from core.connect import connect
from core.log import get_logger
from core.messages import make_job


def register(sub) -> None:
    p = sub.add_parser("cancel", help="cancel a job: pending ones never run, running ones are interrupted")
    add_server(p)
    add_json(p)
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("schedule", help="periodic and timed jobs (JetStream message schedules)")
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    q = ssub.add_parser("add", help="create or replace a schedule")
    add_server(q)
    add_json(q)
    q.add_argument("name", metavar="NAME")
    q.add_argument("kind", metavar="KIND")
    q.add_argument("args", nargs="*", metavar="KEY=VALUE")
    when = q.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="period, e.g. 10m, 30s, 1h")
    when.add_argument("--cron", help="6-field cron: 'sec min hour day month weekday'")
    when.add_argument("--at", help="once, at an RFC3339 UTC time: 2026-11-23T18:00:00Z")
    q.add_argument("--queue", default="default")
    q.add_argument("--timeout", type=positive_float, default=60.0)
    q.add_argument("--max-attempts", type=positive_int, default=3)
    q.set_defaults(func=cmd_schedule, action="add")
    for name, text in (("list", "list schedules"), ("rm", "remove a schedule")):
        q = ssub.add_parser(name, help=text)
        add_server(q)
        add_json(q)
        if name == "rm":
            q.add_argument("name", metavar="NAME")
        q.set_defaults(func=cmd_schedule, action=name)


async def _cancel(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger("cancel"), wait=False)
    try:
        await request_cancel(nc, args.job_id, actor())
    finally:
        await nc.close()
    if args.json:
        print_json({"cancel_requested": args.job_id})
    else:
        print(f"cancellation of {args.job_id} requested; `corral job {args.job_id}` shows when it took effect")
    return 0


async def _schedule(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger("schedule"), wait=False)
    js = nc.jetstream()
    try:
        if args.action == "add":
            spec = f"@every {args.every}" if args.every else args.cron if args.cron else f"@at {args.at}"
            job = make_job(args.kind, parse_kv(args.args), queue=args.queue, timeout=args.timeout, max_attempts=args.max_attempts)
            s = await schedules.add(js, args.name, job, spec)
            rows = [s]
        elif args.action == "rm":
            await schedules.remove(js, args.name)
            rows = []
        else:
            rows = await schedules.list_schedules(js)
    finally:
        await nc.close()
    if args.json:
        print_json([{"name": s.name, "spec": s.spec, "target": s.target, "kind": s.job.kind if s.job else None,
                     "args": s.job.args if s.job else None} for s in rows])
    elif args.action == "rm":
        print(f"schedule {args.name} removed")
    else:
        for s in rows:
            print(f"{s.name:20} {s.spec:28} -> {s.target}  {s.job.kind if s.job else '?'} {s.job.args if s.job else ''}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return run(_cancel, args)


def cmd_schedule(args: argparse.Namespace) -> int:
    return run(_schedule, args)
