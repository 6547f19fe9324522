"""`corral dlq list|replay|purge`: the dead-letter stream from the command line.

replay and purge resolve the filter to an exact set of dead letters once
(:mod:`corral.core.bulk`); ``--dry-run`` prints that preview and stops, and the
action itself is audited with the filter and the count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from corral.cli.common import actor, add_json, ask, add_server, positive_int, print_json, run, settings
from corral.cli.progress import progress
from corral.core.connect import connect
from corral.core.bulk import Frozen, freeze_dead, run_dead
from corral.core.dlq import DeadLetter, list_dead
from corral.core.errors import ConfigError, NotFoundError
from corral.core.log import get_logger


def register(sub) -> None:
    p = sub.add_parser("dlq", help="dead letters: list, replay, purge")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    actions = (("list", "list dead letters"), ("replay", "put dead letters back on the jobs stream"),
               ("purge", "delete dead letters for good"))
    for name, helptext in actions:
        q = dsub.add_parser(name, help=helptext)
        add_server(q)
        add_json(q)
        q.add_argument("--queue", help="only this queue")
        q.add_argument("--kind", help="only jobs of this kind")
        q.add_argument("--reason", help="only reasons containing this text")
        q.add_argument("--limit", type=positive_int, default=None, help="at most this many")
        if name != "list":
            q.add_argument("seqs", nargs="*", type=int, metavar="SEQ", help="dead-letter sequence numbers (from `dlq list`)")
            q.add_argument("--all", action="store_true", help="every dead letter matching the filters")
            q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
            q.add_argument("--dry-run", action="store_true",
                           help="only preview: print how many match and a sample, change nothing")
        q.set_defaults(func=cmd, action=name)


def _match(args: argparse.Namespace):
    def match(d: DeadLetter) -> bool:
        if getattr(args, "seqs", None) and d.seq not in args.seqs:
            return False
        if args.kind and d.kind != args.kind:
            return False
        return not (args.reason and args.reason.lower() not in d.reason.lower())
    return match


def _filter_text(args: argparse.Namespace) -> str:
    """The filter as given, for the preview and the audit event."""
    parts = [f"--{name} {getattr(args, name)}" for name in ("queue", "kind", "reason") if getattr(args, name)]
    if args.seqs:
        parts.append("#" + ",".join(map(str, args.seqs)))
    if args.limit:
        parts.append(f"--limit {args.limit}")
    return " ".join(parts) or "--all"


def _print_preview(frozen: Frozen, as_json: bool) -> None:
    if as_json:
        print_json({"action": frozen.action, "filter": frozen.filter, "count": frozen.count,
                    "seqs": [int(s) for s in frozen.ids], "sample": list(frozen.sample)})
    else:
        print(frozen.preview())


def _row(d: DeadLetter) -> dict:
    return {"seq": d.seq, "job_id": d.job_id, "queue": d.queue, "kind": d.kind, "reason": d.reason,
            "attempts": d.attempts, "bots": d.bots, "dead_at": d.dead_at}


async def _dlq(args: argparse.Namespace) -> int:
    if args.action != "list" and not (args.seqs or args.all or args.kind or args.reason or args.queue):
        raise ConfigError(f"say which dead letters to {args.action}: SEQ..., a filter (--kind/--reason/--queue), or --all")
    cfg = settings(args)
    nc = await connect(cfg, get_logger("dlq"), wait=False)
    try:
        js = nc.jetstream()
        letters = await list_dead(js, queue=args.queue, limit=args.limit, match=_match(args))
        if args.action == "list":
            if args.json:
                print_json([_row(d) for d in letters])
            else:
                for d in letters:
                    when = dt.datetime.fromtimestamp(d.dead_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                    print(f"#{d.seq:<6} {when}  {d.queue}/{d.kind:8} {d.job_id}  attempts={d.attempts}  {d.reason}")
                print(f"{len(letters)} dead letter(s)", file=sys.stderr)
            return 0
        if not letters:
            raise NotFoundError(f"no dead letter matches{' ' + ' '.join(map(str, args.seqs)) if args.seqs else ' the filters'}: "
                                f"nothing to {args.action} (`corral dlq list` shows them)")
        # The set is resolved once, here: the confirmation and the action name exactly the same letters.
        frozen = freeze_dead(args.action, letters, _filter_text(args))
        if args.dry_run:
            _print_preview(frozen, args.json)
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError(f"{args.action} would touch {len(letters)} dead letter(s); add --yes to confirm "
                                  f"(--dry-run previews them)")
            print(frozen.preview(), file=sys.stderr)
            answer = await ask(f"{args.action} {len(letters)} dead letter(s)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("cancelled", file=sys.stderr)
                return 1
        with progress(args.action, len(letters)) as update:
            n = await run_dead(js, frozen, actor=actor(cfg), progress=update)
    finally:
        await nc.close()
    if args.json:
        print_json({args.action: n})
    else:
        print(f"{'replayed' if args.action == 'replay' else 'purged'} {n} dead letter(s)", file=sys.stderr)
    return 0


def cmd(args: argparse.Namespace) -> int:
    return run(_dlq, args)
