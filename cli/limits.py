"""`corral limit set|list|rm`: fleet-wide limits per job kind (core/limits.py), each change audited."""

from __future__ import annotations

import argparse

from corral.core import limits
from corral.cli.common import actor, add_action, positive_float, positive_int, print_json, print_table, run, settings
from corral.core.connect import connect
from corral.core.control import record
from corral.core.errors import ConfigError, InvalidJobError, NotFoundError
from corral.core.log import get_logger
from corral.core.names import check_token


def kind_token(text: str) -> str:
    """An argparse type: a kind usable as a subject token (a limit's keys are named after it)."""
    try:
        return check_token(text, "kind")
    except InvalidJobError as e:
        raise argparse.ArgumentTypeError(f"{e} (kinds with other characters cannot have limits)") from None


def rate(text: str) -> tuple[int, float]:
    """An argparse type: ``N/PERIOD`` such as ``5/1s`` or ``100/1m``."""
    try:
        count, per = limits.parse_rate(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"rate {text!r} must allow at least 1 start per period")
    return count, per


def register(sub) -> None:
    p = sub.add_parser("limit", help="fleet-wide limits per job kind: a concurrency cap and a rate")
    lsub = p.add_subparsers(dest="limit_command", metavar="ACTION", required=True)
    q = add_action(lsub, "set", "create or replace a kind's limits (bots apply them within 2 s)", cmd)
    q.add_argument("kind", metavar="KIND", type=kind_token, help="the job kind to limit")
    q.add_argument("--concurrency", type=positive_int, help="at most N jobs of the kind running at once, fleet-wide")
    q.add_argument("--rate", type=rate, help="at most N starts per fixed window: 5/1s, 100/1m, 10/500ms")
    q.add_argument("--lease", type=positive_float, default=limits.DEFAULT_LEASE,
                   help="seconds a concurrency slot outlives a bot that died holding it (default 30)")
    add_action(lsub, "list", "kinds with limits, slots held now and this window's starts", cmd)
    q = add_action(lsub, "rm", "remove a kind's limits", cmd)
    q.add_argument("kind", metavar="KIND", type=kind_token, help="the kind whose limits to remove")


def _definition(args: argparse.Namespace) -> limits.LimitDef:
    count, per = args.rate if args.rate else (None, 1.0)
    return limits.LimitDef(concurrency=args.concurrency, rate=count, per=per, lease=args.lease).validate()


async def _limit(args: argparse.Namespace) -> int:
    wanted = _definition(args) if args.action == "set" else None  # bad input fails before connecting
    cfg = settings(args)
    nc = await connect(cfg, get_logger("limit"), wait=False)
    js = nc.jetstream()
    try:
        if wanted is not None:  # the set action
            await limits.set_limit(js, args.kind, wanted)
            await record(nc, "limit", actor(cfg), f"set limit on kind {args.kind}: {wanted.describe()}")
            rows = await limits.list_limits(js)
            rows = [r for r in rows if r.kind == args.kind]
        elif args.action == "rm":
            if not await limits.remove_limit(js, args.kind):
                raise NotFoundError(f"no limit is set for kind {args.kind!r}")
            await record(nc, "limit", actor(cfg), f"removed the limit on kind {args.kind}")
            rows = []
        else:
            rows = await limits.list_limits(js)
    finally:
        await nc.close()
    if args.json:
        print_json({"removed": args.kind} if args.action == "rm" else [r.as_dict() for r in rows])
    elif args.action == "rm":
        print(f"limit on kind {args.kind} removed")
    else:
        _print(rows)
    return 0


def _print(rows: list[limits.LimitStatus]) -> None:
    print_table("{:20} {:>11} {:>7} {:>10} {:>11}  {}", ("kind", "concurrency", "running", "rate", "this window", "lease"),
                (_row(r) for r in rows), "no limits set")


def _row(r: limits.LimitStatus) -> tuple[object, ...]:
    d = r.limit
    cap = str(d.concurrency) if d.concurrency else "-"
    rate_text = f"{d.rate}/{limits.period_text(d.per)}" if d.rate else "-"
    window = str(r.window_count) if d.rate else "-"
    lease = f"{d.lease:g}s" if d.concurrency else "-"
    return r.kind, cap, r.slots_held, rate_text, window, lease


def cmd(args: argparse.Namespace) -> int:
    return run(_limit, args)
