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

from corral.cli import exits
from corral.cli.common import actor, add_json, add_server, duration, positive_float, positive_int, print_json, run, settings
from corral.cli.progress import progress
from corral.core.connect import connect
from corral.core.errors import ConfigError, InvalidJobError, UnknownKindError
from corral.core.handlers import POPULATE_KINDS, check_args, generate
from corral.core.kinds import coverage
from corral.core.log import get_logger
from corral.core.messages import Job, Singleton, make_job
from corral.core.names import PRIORITIES, check_token
from corral.core import debounce, schedules, tracing
from corral.core.submit import parse_kv, submit, submit_many


def register(sub) -> None:
    p = sub.add_parser("submit", help="submit one job (KIND key=value ...) or many (--file jobs.ndjson)")
    add_server(p)
    add_json(p)
    p.add_argument("kind", nargs="?", help="the job kind (built-in: sum, sleep, fail, echo)")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE", help="job arguments; values are JSON when they parse (a=1 is a number)")
    p.add_argument("--file", type=Path, help="NDJSON file, one job object per line ({\"kind\": ..., \"args\": {...}}); "
                   "lines without an id get one from their line number and text, so resubmitting the file is safe")
    p.add_argument("--queue", default="default", help="the queue to submit to (default: default)")
    p.add_argument("--priority", default="normal", choices=PRIORITIES, help="high, normal (default) or low; bots take higher first")
    p.add_argument("--id", dest="job_id", help="job id (default: random); [A-Za-z0-9_-], at most 128")
    p.add_argument("--idempotency-key", help="dedupe key: a second submit with it inside 10 minutes is the same job")
    p.add_argument("--correlation-id", help="free text carried on every event of the job, to tie it to your own request")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="handler timeout in seconds (default 60)")
    p.add_argument("--max-attempts", type=positive_int, default=3, help="attempts before dead-lettering (default 3)")
    p.add_argument("--unique", metavar="KEY", help="refuse this job while another with the same key is pending or running")
    p.add_argument("--expires-in", type=positive_float, metavar="SECONDS",
                   help="drop the job (recorded as expired) if not started within this time")
    add_checks(p)
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=positive_float, metavar="SECONDS", help="run after this many seconds (a server schedule)")
    when.add_argument("--at", metavar="TIME", help="run at this RFC3339 UTC time, e.g. 2026-11-23T18:00:00Z")
    when.add_argument("--debounce", type=duration, metavar="WINDOW",
                      help="with --key: run after WINDOW (5s, 500ms, 2m) unless a newer job with the same key "
                      "arrives first; only the last of a burst runs, the others are recorded as superseded")
    p.add_argument("--key", metavar="KEY", help="the debounce key (with --debounce); [A-Za-z0-9_-], at most 128")
    p.add_argument("--traceparent", metavar="TRACEPARENT",
                   help="W3C trace context to run the job under (00-<trace id>-<span id>-<flags>); by default the "
                   "current OpenTelemetry span's, if any")
    p.add_argument("--singleton", metavar="KEY", help="at most one job with this key runs at a time, fleet-wide")
    p.add_argument("--if-busy", choices=("queue", "drop"), default="queue",
                   help="with --singleton, while another job holds the key: queue (wait behind it, the default) "
                   "or drop (end without running, recorded as dropped)")
    p.add_argument("--fair", metavar="KEY", type=fair_key,
                   help="fairness key (a tenant): jobs of different keys start in turn, by weight (`corral fair`)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("populate", help="submit N generated `sum` jobs, pipelined, with progress (the seed's population)")
    add_server(p)
    add_json(p)
    p.add_argument("count", type=positive_int, metavar="N", help="how many jobs to generate")
    p.add_argument("--kind", default="sum", choices=sorted(POPULATE_KINDS), help="the kind of the generated jobs (default sum)")
    p.add_argument("--queue", default="default", help="the queue to submit to (default: default)")
    p.add_argument("--priority", default="normal", choices=PRIORITIES, help="priority of every job (default normal)")
    p.set_defaults(func=cmd_populate)


def add_checks(p: argparse.ArgumentParser) -> None:
    check = p.add_mutually_exclusive_group()
    check.add_argument("--strict", action="store_true",
                       help="refuse (exit 3) a kind that no live bot serves, instead of warning; with no bot running at all "
                       "the job is still submitted, to wait for one")
    check.add_argument("--no-check", action="store_true",
                       help="skip the kind and argument checks (for bots that register their own handler under a built-in name)")


def check_jobs(jobs: list[Job], args: argparse.Namespace) -> None:
    """Refuse jobs whose arguments do not fit their kind's declared schema, before anything is sent.

    Raises:
        InvalidJobError: one does not fit (the message names it when there are several).
    """
    if getattr(args, "no_check", False):
        return
    for index, job in enumerate(jobs, 1):
        try:
            check_args(job.kind, job.args)
        except InvalidJobError as e:
            where = f"job #{index} ({job.id}): " if len(jobs) > 1 else ""
            raise InvalidJobError(f"{where}{e}. Nothing was submitted.") from e


async def check_served(js, kinds: set[str], args: argparse.Namespace) -> None:
    """Warn on stderr about kinds no live bot serves (refuse them with --strict).

    Raises:
        UnknownKindError: --strict, and live bots advertise their kinds and none serves one of these.
    """
    if getattr(args, "no_check", False):
        return
    cover = await coverage(js)
    if cover.bots == 0:
        print("corral: warning: no bot is running; the job(s) wait until one starts", file=sys.stderr)
        return
    for kind in sorted(k for k in kinds if cover.serves(k) is False):
        why = f"no live bot serves kind {kind!r} (the {cover.bots} live bot(s) serve {', '.join(sorted(cover.kinds))})"
        if getattr(args, "strict", False):
            raise UnknownKindError(f"{why}; nothing was submitted")
        print(f"corral: warning: {why}; the job waits until a bot with that handler runs (--strict refuses instead)",
              file=sys.stderr)


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


def _report_debounce(args: argparse.Namespace, d: debounce.Debounced) -> int:
    runs_at = dt.datetime.fromtimestamp(d.runs_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if args.json:
        print_json({"id": d.job_id, "debounce_key": d.key, "runs_at": runs_at, "replaced": d.replaced, "recorded": d.recorded})
    else:
        print(d.job_id)
        replaced = f"; it replaced {d.replaced}, which will not run" if d.replaced else ""
        print(f"debounced on {d.key}: runs at {runs_at} unless a newer job with this key arrives{replaced}", file=sys.stderr)
    if not d.recorded:
        print("corral: the job waits, but its debounced/superseded events could not be recorded", file=sys.stderr)
    return exits.OK


def fair_key(text: str) -> str:
    """An argparse type: a fairness key usable as a subject token (its jobs wait on a subject named after it)."""
    try:
        return check_token(text, "fairness key")
    except InvalidJobError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


async def _submit(args: argparse.Namespace) -> int:
    if args.file is None and not args.kind:
        raise ConfigError("give a KIND (corral submit sum a=1 b=2) or --file jobs.ndjson")
    if (args.debounce is None) != (args.key is None):
        raise ConfigError("--debounce WINDOW and --key KEY go together: corral submit KIND --debounce 5s --key user-42")
    if args.file is not None and args.debounce is not None:
        raise ConfigError("--debounce applies to one job; it cannot be combined with --file")
    if args.key is not None:
        check_token(args.key, "debounce key")
    if args.traceparent is not None:
        tracing.check_traceparent(args.traceparent)
        if args.file is not None or args.debounce is not None or args.delay or args.at:
            raise ConfigError("--traceparent applies to one job submitted now (not --file, --debounce, --delay or --at)")
    if args.fair and (args.debounce is not None or args.delay or args.at):
        raise ConfigError("--fair applies to jobs submitted now (not --debounce, --delay or --at)")
    if args.file is not None:
        jobs = read_ndjson(args.file, args.queue)
        if args.fair:  # a line's own fairness_key wins
            jobs = [j if j.fairness_key else msgspec.structs.replace(j, fairness_key=args.fair) for j in jobs]
        check_jobs(jobs, args)
        return await _submit_many(args, jobs, "submitting")
    fields = dict(queue=args.queue, priority=args.priority, timeout=args.timeout, max_attempts=args.max_attempts,
                  idempotency_key=args.idempotency_key, correlation_id=args.correlation_id, unique_key=args.unique,
                  fairness_key=args.fair)
    if args.singleton:
        fields["singleton"] = Singleton(key=args.singleton, busy=args.if_busy)
    if args.job_id:
        fields["id"] = args.job_id
    if args.expires_in:
        fields["expires_at"] = time.time() + args.expires_in
    job = make_job(args.kind, parse_kv(args.args), **fields)
    check_jobs([job], args)
    nc = await connect(settings(args), get_logger("submit"), wait=False)
    try:
        await check_served(nc.jetstream(), {job.kind}, args)
        if args.debounce is not None:
            return _report_debounce(args, await debounce.debounce(nc.jetstream(), job, args.key, args.debounce, actor=actor()))
        if args.delay or args.at:
            when = f"@at {args.at}" if args.at else schedules.spec_at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.delay))
            await schedules.add(nc.jetstream(), job.id, job, when)
            if args.json:
                print_json({"id": job.id, "scheduled": when})
            else:
                print(job.id)
                print(f"scheduled {when}: `corral job {job.id}` shows it until it runs", file=sys.stderr)
            return exits.OK
        receipt = await submit(nc.jetstream(), job, traceparent=args.traceparent)
    finally:
        await nc.close()
    if args.json:
        print_json({"id": receipt.job_id, "seq": receipt.seq, "duplicate": receipt.duplicate})
    else:
        print(receipt.job_id)
    if receipt.duplicate:
        print(f"corral: nothing new submitted: job {receipt.job_id} was already submitted (same "
              f"{'idempotency key' if job.idempotency_key else 'id'} within 10 minutes)", file=sys.stderr)
        return exits.NOTHING_DONE
    return exits.OK


async def _submit_many(args: argparse.Namespace, jobs: list[Job], what: str) -> int:
    nc = await connect(settings(args), get_logger("submit"), wait=False)
    start = time.monotonic()
    try:
        await check_served(nc.jetstream(), {j.kind for j in jobs}, args)
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
        print(f"accepted {summary.accepted} ({summary.duplicates} duplicates) in {elapsed:.2f}s, {report['rate']:,.0f} jobs/s",
              file=sys.stderr)
    if summary.refused:
        index, job_id, reason = summary.refused[0]
        print(f"corral: {len(summary.refused)} job(s) NOT accepted, first #{index} ({job_id}): {reason}\n"
              "Resubmitting the same input is safe: accepted jobs are dropped as duplicates for 10 minutes.", file=sys.stderr)
        return exits.FAILED
    if jobs and summary.duplicates == len(jobs):
        print(f"corral: nothing new submitted: all {len(jobs)} job(s) were already submitted (duplicates)", file=sys.stderr)
        return exits.NOTHING_DONE
    return exits.OK


def cmd_submit(args: argparse.Namespace) -> int:
    return run(_submit, args)


def cmd_populate(args: argparse.Namespace) -> int:
    return run(_submit_many, args, generate(args.kind, args.count, args.queue, args.priority), "populating")
