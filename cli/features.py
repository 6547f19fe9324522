"""`corral cancel ID`, `corral schedule add|list|rm` and `corral group submit|show`: job features beyond submit."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral.core import debounce, groups, lookup, schedules
from corral.core.cancel import request_cancel
from corral.cli import exits
from corral.cli.common import actor, add_json, add_server, positive_float, positive_int, print_json, run, settings
from corral.cli.inspect import _ts
from corral.cli.progress import progress
from corral.cli.submit import add_checks, check_jobs, check_served, read_ndjson
from corral.core.connect import connect
from corral.core.errors import ConfigError, NotFoundError, NothingToDoError
from corral.core.log import get_logger
from corral.core.messages import Job, make_job
from corral.core.names import PRIORITIES, check_token
from corral.core.schedules import add_schedule, remove_schedule, schedule_spec
from corral.core.submit import parse_kv, submit_many


def register(sub) -> None:
    p = sub.add_parser("cancel", help="cancel a job: pending ones never run, running ones are interrupted")
    add_server(p)
    add_json(p)
    p.add_argument("job_id", metavar="ID", help="the job to cancel; unknown and already ended jobs are refused")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("schedule", help="periodic and timed jobs (JetStream message schedules)")
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    q = ssub.add_parser("add", help="create or replace a schedule")
    add_server(q)
    add_json(q)
    q.add_argument("name", metavar="NAME", help="the schedule's name; adding an existing name replaces it")
    q.add_argument("kind", metavar="KIND", help="the kind of job each firing submits")
    q.add_argument("args", nargs="*", metavar="KEY=VALUE", help="the job's arguments; values are JSON when they parse")
    when = q.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="period, e.g. 10m, 30s, 1h")
    when.add_argument("--cron", help="6-field cron: 'sec min hour day month weekday'")
    when.add_argument("--at", help="once, at an RFC3339 UTC time: 2026-11-23T18:00:00Z")
    q.add_argument("--queue", default="default", help="queue of every firing (default: default)")
    q.add_argument("--priority", default="normal", choices=PRIORITIES, help="priority of every firing (default normal)")
    q.add_argument("--timeout", type=positive_float, default=60.0, help="handler timeout in seconds (default 60)")
    q.add_argument("--max-attempts", type=positive_int, default=3, help="attempts before dead-lettering (default 3)")
    q.set_defaults(func=cmd_schedule, action="add")
    for name, text in (("list", "list schedules"), ("rm", "remove a schedule")):
        q = ssub.add_parser(name, help=text)
        add_server(q)
        add_json(q)
        if name == "rm":
            q.add_argument("name", metavar="NAME", help="the schedule to remove (`corral schedule list` shows them)")
        q.set_defaults(func=cmd_schedule, action=name)
    _register_group(sub)


def _register_group(sub) -> None:
    p = sub.add_parser("group", help="fan-out/fan-in: members that run in parallel, then one callback with every outcome")
    gsub = p.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    q = gsub.add_parser("submit", help="submit a group (members from an NDJSON file) and its callback; prints the group id")
    add_server(q)
    add_json(q)
    q.add_argument("--file", type=Path, required=True, help="NDJSON, one member job per line ({\"kind\": ..., \"args\": {...}}), "
                   "as for `corral submit --file`")
    q.add_argument("--callback", required=True, metavar="KIND", help="the callback's kind; it runs once every member has "
                   "succeeded or died, with args group and members (each member's outcome)")
    q.add_argument("args", nargs="*", metavar="KEY=VALUE", help="the callback's arguments; values are JSON when they parse")
    q.add_argument("--group", dest="group_id", help="group id (default: derived from the members and the callback, so "
                   "resubmitting the same input is the same group); [A-Za-z0-9_-], at most 128")
    q.add_argument("--queue", default="default", help="queue of the callback and of members that name none")
    add_checks(q)
    q.set_defaults(func=cmd_group_submit)
    q = gsub.add_parser("show", help="a group's members finished / size, each member's outcome, the callback's state")
    add_server(q)
    add_json(q)
    q.add_argument("group", metavar="GROUP_ID", help="the group id `corral group submit` printed")
    q.set_defaults(func=cmd_group_show)


async def _cancel(args: argparse.Namespace) -> int:
    job_id = check_token(args.job_id, "job id")
    cfg = settings(args)
    nc = await connect(cfg, get_logger("cancel"), wait=False)
    try:
        js = nc.jetstream()
        where = await lookup.locate(js, job_id)
        if not where.known:
            raise NotFoundError(f"no record of job {job_id} (not scheduled, not waiting, no event or result): nothing to cancel")
        if where.state == lookup.ENDED_STATE:
            raise NothingToDoError(f"job {job_id} already ended ({where.detail}): nothing to cancel")
        if await lookup.cancel_requested(js, job_id):
            raise NothingToDoError(f"cancellation of job {job_id} was already requested: `corral job {job_id}` shows when it takes effect")
        await request_cancel(nc, job_id, actor(cfg))
    finally:
        await nc.close()
    if args.json:
        print_json({"cancel_requested": job_id, "state": where.state})
    else:
        print(f"cancellation of {job_id} ({where.state}) requested; `corral job {job_id}` shows when it took effect", file=sys.stderr)
    return 0


async def _schedule(args: argparse.Namespace) -> int:
    cfg = settings(args)
    nc = await connect(cfg, get_logger("schedule"), wait=False)
    js = nc.jetstream()
    try:
        if args.action == "add":
            spec = schedule_spec(every=args.every, cron=args.cron, at=args.at)
            job = make_job(args.kind, parse_kv(args.args), queue=args.queue, priority=args.priority,
                           timeout=args.timeout, max_attempts=args.max_attempts)
            check_jobs([job], args)
            rows = [await add_schedule(nc, args.name, job, spec, actor(cfg))]
        elif args.action == "rm":
            if await lookup.schedule_of(js, check_token(args.name, "schedule name")) is None:
                raise NotFoundError(f"no schedule named {args.name!r} (`corral schedule list` shows them)")
            await remove_schedule(nc, args.name, actor(cfg))
            rows = []
        else:
            # Jobs waiting out a debounce window are one-shot schedules too: listed as debounce:<key>.
            rows = await schedules.list_schedules(js) + [
                schedules.Schedule(f"debounce:{w.key}", w.spec, w.target, w.job) for w in await debounce.waiting(js)]
    finally:
        await nc.close()
    if args.json:
        print_json([{"name": s.name, "spec": s.spec, "target": s.target, "kind": s.job.kind if s.job else None,
                     "args": s.job.args if s.job else None} for s in rows])
    elif args.action == "rm":
        print(f"schedule {args.name} removed", file=sys.stderr)
    else:
        for s in rows:
            print(f"{s.name:20} {s.spec:28} -> {s.target}  {s.job.kind if s.job else '?'} {s.job.args if s.job else ''}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return run(_cancel, args)


def cmd_schedule(args: argparse.Namespace) -> int:
    return run(_schedule, args)


def build_group(members: list[Job], callback: Job, group: str | None) -> tuple[str, list[Job]]:
    """The group id and :func:`corral.core.groups.make_group`'s members, with a default group id derived from the
    members' ids and the callback, so submitting the same input twice is one group (members and callback dedupe by id)."""
    if not members:
        raise ConfigError("a group needs at least one member: the file has no jobs")
    if not group:  # also for an empty --group, which make_group would replace with a random id
        key = json.dumps([[m.id for m in members], callback.kind, callback.args, callback.queue], sort_keys=True, default=str)
        group = f"group-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    return group, groups.make_group(members, callback, group)


async def _group_submit(args: argparse.Namespace) -> int:
    callback = make_job(args.callback, parse_kv(args.args), queue=args.queue)
    group, members = build_group(read_ndjson(args.file, args.queue), callback, args.group_id)
    check_jobs([*members, callback], args)
    nc = await connect(settings(args), get_logger("group"), wait=False)
    try:
        await check_served(nc.jetstream(), {callback.kind, *(m.kind for m in members)}, args)
        with progress(f"submitting group {group}", len(members)) as update:
            summary = await submit_many(nc.jetstream(), members, progress=update)
    finally:
        await nc.close()
    if args.json:
        print_json({"group": group, "members": len(members), "accepted": summary.accepted, "duplicates": summary.duplicates,
                    "refused": summary.refused[:100], "callback": {"id": groups.callback_id(group), "kind": callback.kind}})
    else:
        print(group)
        fresh = summary.accepted - summary.duplicates
        print(f"{fresh} of {len(members)} member(s) submitted"
              f"{f', {summary.duplicates} already submitted before (duplicates)' if summary.duplicates else ''}; "
              f"callback {callback.kind} runs as {groups.callback_id(group)} once all have finished: "
              f"`corral group show {group}`", file=sys.stderr)
    if 0 < summary.duplicates < len(members):
        print(f"corral: {summary.duplicates} member(s) were already submitted (same ids within 10 minutes) and were "
              "dropped; if they belong to another group, this one will never complete: give members their own ids",
              file=sys.stderr)
    if summary.refused:
        index, job_id, reason = summary.refused[0]
        print(f"corral: {len(summary.refused)} member(s) NOT accepted, first #{index} ({job_id}): {reason}; the group "
              "completes only once they are: resubmit the same file (accepted members are dropped as duplicates)", file=sys.stderr)
        return exits.FAILED
    if summary.duplicates == len(members):
        print(f"corral: nothing new submitted: every member of group {group} was already submitted", file=sys.stderr)
        return exits.NOTHING_DONE
    return exits.OK


async def _group_show(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger("group"), wait=False)
    try:
        status = await groups.group_status(nc.jetstream(), args.group)
    finally:
        await nc.close()
    found = bool(status.finished or status.shape)
    if args.json:
        print_json({
            "group": status.group, "done": status.done, "size": status.shape.size if status.shape else None,
            "members": [{"id": m.job_id, "outcome": m.outcome, "finished_at": m.ts, "detail": m.detail} for m in status.finished],
            "callback": {"id": groups.callback_id(status.group), "kind": status.shape.callback.kind if status.shape else None,
                         "state": status.callback_state},
        })
    if not found:
        raise NotFoundError(f"no record of group {status.group} (unknown id, no member finished or waiting, or past the 7-day retention)")
    if args.json:
        return 0
    _print_group(status)
    return 0


def _print_group(status: groups.GroupStatus) -> None:
    size = str(status.shape.size) if status.shape else "?"
    dead = sum(m.outcome != "succeeded" for m in status.finished)
    console = Console()
    console.print(f"group {status.group}: {status.done}/{size} members finished ({status.done - dead} succeeded, {dead} dead)")
    kind = status.shape.callback.kind if status.shape else "?"
    console.print(f"callback {kind} as {groups.callback_id(status.group)}: {status.callback_state}")
    if not status.finished:
        return
    t = Table(title="finished members")
    for col in ("member", "outcome", "finished (UTC)", "detail"):
        t.add_column(col)
    for m in status.finished:
        style = "green" if m.outcome == "succeeded" else "red"
        t.add_row(m.job_id, f"[{style}]{m.outcome}[/]", _ts(m.ts), escape(msgspec.json.encode(m.detail).decode()[:60]))
    console.print(t)


def cmd_group_submit(args: argparse.Namespace) -> int:
    return run(_group_submit, args)


def cmd_group_show(args: argparse.Namespace) -> int:
    return run(_group_show, args)
