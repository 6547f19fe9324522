"""`corral fair status|weight|cap`: fairness keys' waiting lines, weights and caps (core/fairness.py)."""

from __future__ import annotations

import argparse

from corral.cli.common import actor, add_json, add_server, print_json, run, settings
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
    q = fsub.add_parser("status", help="keys with jobs waiting or settings: waiting, running (capped keys), weight, cap")
    add_server(q)
    add_json(q)
    q.set_defaults(func=cmd, action="status")
    q = fsub.add_parser("weight", help="give a key N starts per round while other keys have work (default 1)")
    add_server(q)
    add_json(q)
    q.add_argument("key", metavar="KEY", type=fair_key, help="the fairness key")
    q.add_argument("weight", metavar="N", type=weight, help="starts per round, 1-1000")
    q.set_defaults(func=cmd, action="weight")
    q = fsub.add_parser("cap", help="at most N of a key's jobs running at once, fleet-wide ('none' removes the cap)")
    add_server(q)
    add_json(q)
    q.add_argument("key", metavar="KEY", type=fair_key, help="the fairness key")
    q.add_argument("cap", metavar="N", type=cap, help="jobs running at once, 1-1000, or none")
    q.set_defaults(func=cmd, action="cap")


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
    if not rows:
        print("no fairness keys have jobs waiting or settings")
        return
    print(f"{'key':24} {'waiting':>9} {'running':>7} {'weight':>6} {'cap':>5}")
    for r in rows:
        running = "-" if r.running is None else str(r.running)
        print(f"{r.key:24} {r.waiting:>9} {running:>7} {r.weight:>6} {r.cap or '-':>5}")


def cmd(args: argparse.Namespace) -> int:
    return run(_fair, args)
