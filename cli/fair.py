"""`corral fair status|weight|cap`: fairness keys' waiting lines, weights and caps (core/fairness.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from corral.cli.common import actor, add_action, print_json, print_table, run, settings
from corral.cli.submit import fair_key
from corral.core import fairness
from corral.core.connect import connect
from corral.core.control import record
from corral.core.log import get_logger


def weight(text: str) -> int:
    """An argparse type: starts per round, 1-1000."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight {text!r} is not a whole number") from None
    if not 1 <= n <= fairness.MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"weight {n} must be 1-{fairness.MAX_WEIGHT}")
    return n


def cap(text: str) -> int | None:
    """An argparse type: jobs of the key running at once, 1-1000, or ``none`` for no cap."""
    if text.lower() == "none":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cap {text!r} is not a whole number or 'none'") from None
    if not 1 <= n <= fairness.MAX_CAP:
        raise argparse.ArgumentTypeError(f"cap {n} must be 1-{fairness.MAX_CAP} (or 'none')")
    return n


def register(sub) -> None:
    p = sub.add_parser("fair", help="fairness keys (tenants): waiting jobs per key, weights and per-key caps")
    fsub = p.add_subparsers(dest="fair_command", metavar="ACTION", required=True)
    add_action(fsub, "status", "keys with jobs waiting or settings: waiting, running (capped keys), weight, cap", cmd)
    _add_setting(fsub, "weight", "give a key N starts per round while other keys have work (default 1)", weight,
                 "starts per round, 1-1000")
    _add_setting(fsub, "cap", "at most N of a key's jobs running at once, fleet-wide ('none' removes the cap)", cap,
                 "jobs running at once, 1-1000, or none")


def _add_setting(fsub, name: str, help: str, parse: Callable[[str], object], n_help: str) -> None:
    """``corral fair NAME KEY N``: one setting of one key, N read by ``parse`` into ``args.<name>``."""
    q = add_action(fsub, name, help, cmd)
    q.add_argument("key", metavar="KEY", type=fair_key, help="the fairness key")
    q.add_argument(name, metavar="N", type=parse, help=n_help)


async def _fair(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger("fair"), wait=False)
    js = nc.jetstream()
    try:
        if args.action == "weight":
            d = await fairness.configure(js, args.key, weight=args.weight)
            await record(nc, "fair", actor(), f"set fairness weight of {args.key} to {d.weight}")
        elif args.action == "cap":
            d = await fairness.configure(js, args.key, cap=args.cap, uncap=args.cap is None)
            await record(nc, "fair", actor(), f"set fairness cap of {args.key} to {d.cap or 'none'}")
        rows = await fairness.status(nc, js)
    finally:
        await nc.close()
    if args.action != "status":
        rows = [r for r in rows if r.key == args.key]
    if args.json:
        print_json([r.as_dict() for r in rows])
    else:
        _print(rows)
    return 0


def _print(rows: list[fairness.KeyStatus]) -> None:
    print_table("{:24} {:>9} {:>7} {:>6} {:>5}", ("key", "waiting", "running", "weight", "cap"),
                ((r.key, r.waiting, "-" if r.running is None else str(r.running), r.weight, r.cap or "-") for r in rows),
                "no fairness keys have jobs waiting or settings")


def cmd(args: argparse.Namespace) -> int:
    return run(_fair, args)
