"""`corral submit` and `corral populate`: put jobs on the jobs stream."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path

import msgspec

from corral.cli.common import add_json, add_server, positive_float, positive_int, print_json, run, settings
from corral.cli.progress import progress
from corral.core.connect import connect
from corral.core.errors import ConfigError, InvalidJobError
from corral.core.handlers import POPULATE_KINDS, generate
from corral.core.log import get_logger
from corral.core.messages import Job, make_job
from corral.core.names import PRIORITIES
from corral.core import schedules
from corral.core.submit import parse_kv, submit, submit_many


def register(sub) -> None:
    p = sub.add_parser("submit", help="submit one job (KIND key=value ...) or many (--file jobs.ndjson)")
    add_server(p)
    add_json(p)
    p.add_argument("kind", nargs="?", help="the job kind (built-in: sum, sleep, fail, echo)")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE", help="job arguments; values are JSON when they parse (a=1 is a number)")
    p.add_argument("--file", type=Path, help="NDJSON file, one job object per line ({\"kind\": ..., \"args\": {...}}); "
                   "lines without an id get one from their line number and text, so resubmitting the file is safe")
    p.add_argument("--queue", default="default")
    p.add_argument("--priority", default="normal", choices=PRIORITIES, help="high, normal (default) or low; bots take higher first")
    p.add_argument("--id", dest="job_id", help="job id (default: random); [A-Za-z0-9_-], at most 128")
    p.add_argument("--idempotency-key", help="dedupe key: a second submit with it inside 10 minutes is the same job")
    p.add_argument("--correlation-id")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="handler timeout in seconds (default 60)")
    p.add_argument("--max-attempts", type=positive_int, default=3, help="attempts before dead-lettering (default 3)")
    p.add_argument("--unique", metavar="KEY", help="refuse this job while another with the same key is pending or running")
    p.add_argument("--expires-in", type=positive_float, metavar="SECONDS", help="drop the job (recorded as expired) if not started within this time")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=positive_float, metavar="SECONDS", help="run after this many seconds (a server schedule)")
    when.add_argument("--at", metavar="TIME", help="run at this RFC3339 UTC time, e.g. 2026-11-23T18:00:00Z")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("populate", help="submit N generated `sum` jobs, pipelined, with progress (the seed's population)")
    add_server(p)
    add_json(p)
    p.add_argument("count", type=positive_int, metavar="N")
    p.add_argument("--kind", default="sum", choices=sorted(POPULATE_KINDS))
    p.add_argument("--queue", default="default")
    p.add_argument("--priority", default="normal", choices=PRIORITIES)
    p.set_defaults(func=cmd_populate)


def read_ndjson(path: Path, queue: str) -> list[Job]:
    """Every job in the file, validated before any is sent (a bad line sends nothing).

    Raises:
        ConfigError: the file is unreadable or a line is not a valid job (with its number).
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    jobs = []
    now = time.time()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            # A line without an id gets one derived from its number and text, so submitting the
            # same file again within the dedupe window (10 minutes) adds no duplicates.
            obj.setdefault("id", hashlib.sha256(f"{path.name}:{number}:{line}".encode()).hexdigest()[:32])
            obj.setdefault("created_at", now)
            obj.setdefault("queue", queue)
            jobs.append(msgspec.convert(obj, Job).validate())
        except (ValueError, msgspec.ValidationError, InvalidJobError) as e:
            raise ConfigError(f"{path}:{number}: not a valid job: {e}. Nothing was submitted.") from e
    return jobs


async def _submit(args: argparse.Namespace) -> int:
    if args.file is None and not args.kind:
        raise ConfigError("give a KIND (corral submit sum a=1 b=2) or --file jobs.ndjson")
    if args.file is not None:
        return await _submit_many(args, read_ndjson(args.file, args.queue), "submitting")
    fields = dict(queue=args.queue, priority=args.priority, timeout=args.timeout, max_attempts=args.max_attempts,
                  idempotency_key=args.idempotency_key, correlation_id=args.correlation_id, unique_key=args.unique)
    if args.job_id:
        fields["id"] = args.job_id
    if args.expires_in:
        fields["expires_at"] = time.time() + args.expires_in
    job = make_job(args.kind, parse_kv(args.args), **fields)
    nc = await connect(settings(args), get_logger("submit"), wait=False)
    try:
        if args.delay or args.at:
            when = f"@at {args.at}" if args.at else schedules.spec_at(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=args.delay))
            await schedules.add(nc.jetstream(), job.id, job, when)
            if args.json:
                print_json({"id": job.id, "scheduled": when})
            else:
                print(f"{job.id}  (scheduled {when})")
            return 0
        receipt = await submit(nc.jetstream(), job)
    finally:
        await nc.close()
    if args.json:
        print_json({"id": receipt.job_id, "seq": receipt.seq, "duplicate": receipt.duplicate})
    else:
        print(f"{receipt.job_id}{'  (duplicate: already submitted)' if receipt.duplicate else ''}")
    return 0


async def _submit_many(args: argparse.Namespace, jobs: list[Job], what: str) -> int:
    nc = await connect(settings(args), get_logger("submit"), wait=False)
    start = time.monotonic()
    try:
        with progress(what, len(jobs)) as update:
            summary = await submit_many(nc.jetstream(), jobs, progress=update)
    finally:
        await nc.close()
    elapsed = time.monotonic() - start
    report = {"accepted": summary.accepted, "duplicates": summary.duplicates, "refused": len(summary.refused),
              "seconds": round(elapsed, 3), "rate": round(summary.accepted / max(elapsed, 1e-9), 1)}
    if args.json:
        print_json({**report, "refusals": summary.refused[:100]})
    else:
        print(f"accepted {summary.accepted} ({summary.duplicates} duplicates) in {elapsed:.2f}s, {report['rate']:,.0f} jobs/s")
    if summary.refused:
        index, job_id, reason = summary.refused[0]
        print(f"corral: {len(summary.refused)} job(s) NOT accepted, first #{index} ({job_id}): {reason}\n"
              "Resubmitting the same input is safe: accepted jobs are dropped as duplicates for 10 minutes.", file=sys.stderr)
        return 1
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    return run(_submit, args)


def cmd_populate(args: argparse.Namespace) -> int:
    return run(_submit_many, args, generate(args.kind, args.count, args.queue, args.priority), "populating")
