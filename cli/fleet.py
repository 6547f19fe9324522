"""`corral fleet`, `corral scale` and `corral fleet-status`: bots kept running per host."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from corral.bots.fleet import FleetConfig, SlotCredentials, Supervisor
from corral.bots.fleet_slot import Backoff, SlotPolicy
from corral.cli.common import add_json, add_server, positive_float, print_json, run, settings
from corral.core.connect import connect
from corral.core import leases
from corral.core.control import actor, record
from corral.core.errors import ConfigError, NothingToDoError, NotFoundError
from corral.core.fleet import (
    FLEET_BUCKET, MAX_BOTS_PER_HOST, check_count, check_host, decode_supervisor, desired_key, fleet_status, read_desired,
    supervisor_key, write_desired,
)
from corral.core.log import get_logger


def register(sub) -> None:
    p = sub.add_parser(
        "fleet", help="supervise this host's bots: keep desired.<host> of them running (SIGTERM drains them all)",
        description="Keep `corral scale`'s count of `corral bot` processes named HOST-1..HOST-N running. "
        "Arguments after `--` go to every bot, e.g. `corral fleet --host web1 -- --queue render --concurrency 4`.",
    )
    add_server(p)
    p.add_argument("--host", required=True, help="this machine's name in the fleet (bots are HOST-1, HOST-2, ...)")
    p.add_argument("--count", type=count_arg, help="set desired.HOST to this at start (default: keep the stored count)")
    p.add_argument("--bot-ttl", type=positive_float, default=10.0, help="the bots' liveness TTL; silent for 2 TTL = hung (default 10)")
    p.add_argument("--ttl", type=positive_float, default=10.0, help="the supervisor's own liveness TTL in seconds (default 10)")
    p.add_argument("--backoff-base", type=positive_float, default=1.0, help="first restart delay after a crash, seconds (default 1)")
    p.add_argument("--backoff-max", type=positive_float, default=60.0, help="longest restart delay, seconds (default 60)")
    p.add_argument("--stable-after", type=positive_float, default=30.0, help="a bot up this long resets its backoff (default 30)")
    p.add_argument("--stop-timeout", type=positive_float, default=45.0, help="SIGKILL a draining bot after this many seconds (default 45)")
    p.add_argument("--log-dir", help="write each bot's log to DIR/HOST-N.log (default: inherit the supervisor's stderr)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port at /metrics (default: off)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR",
                   help="address the metrics endpoint binds (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--slot-credentials", type=folder_arg, metavar="DIR",
                   help="log each bot in as its own user: DIR/HOST-N holds slot N's password, or DIR/HOST-N.creds "
                   "its creds file (docs/security.md; default: bots log in as the supervisor does)")
    p.add_argument("bot_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_fleet)

    p = sub.add_parser("scale", help="set how many bots a host's supervisor keeps running (0 removes the host)",
                       description="Set desired.HOST, which that host's `corral fleet` supervisor follows. A host "
                       "without a live supervisor is refused unless --create (a typo would leave a phantom host). "
                       "N=0 deletes the host's count: its supervisor stops every bot, and the host leaves "
                       "`corral fleet-status` once no supervisor runs there.")
    add_server(p)
    p.add_argument("count", type=count_arg, metavar="N", help=f"bots to keep running, 0-{MAX_BOTS_PER_HOST}")
    p.add_argument("--host", required=True, help="the fleet host (as given to `corral fleet --host`)")
    p.add_argument("--create", action="store_true",
                   help="set the count even though no supervisor runs on the host yet (one started later follows it)")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("fleet-status", help="hosts, desired vs live bots, supervisors and crash loops")
    add_server(p)
    add_json(p)
    p.set_defaults(func=cmd_status)


def count_arg(text: str) -> int:
    try:
        return check_count(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text} must be 0-{MAX_BOTS_PER_HOST}") from None


def folder_arg(text: str) -> SlotCredentials:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return SlotCredentials(path)


def config_from(args: argparse.Namespace) -> FleetConfig:
    bot_args = list(args.bot_args or [])
    if bot_args[:1] == ["--"]:
        bot_args = bot_args[1:]
    return FleetConfig(
        host=check_host(args.host), initial_count=args.count, bot_ttl=args.bot_ttl, ttl=args.ttl,
        policy=SlotPolicy(backoff=Backoff(args.backoff_base, args.backoff_max), stable_after=args.stable_after,
                          stop_timeout=args.stop_timeout),
        bot_args=tuple(bot_args), log_dir=Path(args.log_dir) if args.log_dir else None,
        log_format=getattr(args, "log_format", "logfmt"), metrics_port=args.metrics_port,
        metrics_host=args.metrics_host, slot_credentials=args.slot_credentials,
    )


def cmd_fleet(args: argparse.Namespace) -> int:
    supervisor = Supervisor(settings(args), config_from(args), get_logger("fleet"))
    return run(supervisor.run)


# -- scale ----------------------------------------------------------------------------------------


async def _live_supervisor(js, host: str) -> bool:
    """Whether ``host`` has a supervisor whose liveness key is present (it has a TTL: a dead one's expires)."""
    msg = await leases.read(js, FLEET_BUCKET, supervisor_key(host))
    return msg is not None and not leases.is_gone(msg) and decode_supervisor(msg.data) is not None


async def _scale(args: argparse.Namespace) -> int:
    host = check_host(args.host)
    cfg = settings(args)
    who = actor(cfg)
    nc = await connect(cfg, get_logger("scale"), wait=False)
    try:
        js = nc.jetstream()
        old = await read_desired(js, host)
        if args.count == 0 and old is None:
            raise NothingToDoError(f"host {host} has no desired count: nothing to remove")
        if args.count and not args.create and not await _live_supervisor(js, host):
            raise NotFoundError(f"no live supervisor on host {host!r} (`corral fleet-status` lists the hosts); "
                                f"start `corral fleet --host {host}` there, or add --create to set the count anyway")
        if args.count == 0:
            # Deleting the key, not writing 0: a supervisor treats a deleted count as 0, and the
            # host disappears from fleet-status instead of lingering as a row nobody runs.
            await (await js.key_value(FLEET_BUCKET)).delete(desired_key(host))
        else:
            await write_desired(js, host, args.count, who)
        await record(nc, "scale", who, f"host {host}: {old.count if old else 0} -> {args.count} bots")
    finally:
        await nc.close()
    print(f"{host}: desired {old.count if old else 0} -> {args.count}{' (removed)' if args.count == 0 else ''}", file=sys.stderr)
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    return run(_scale, args)


# -- fleet-status -------------------------------------------------------------------------------------


async def _status(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger("fleet-status"), wait=False)
    try:
        rows = await fleet_status(nc.jetstream())
    finally:
        await nc.close()
    if args.json:
        print_json([asdict(r) for r in rows])
        return 0
    t = Table(title=f"fleet ({len(rows)} hosts)")
    t.add_column("host", no_wrap=True, min_width=max([4, *(len(r.host) for r in rows)]))  # never cut: it is typed next
    for col in ("desired", "live", "bots", "supervisor", "heartbeat\nage", "crash\nloop", "scaled\nby"):  # two-line headers fit 80 columns
        t.add_column(col)
    for r in rows:
        live = f"[red]{len(r.live)}[/]" if r.desired is not None and len(r.live) != r.desired else str(len(r.live))
        sup = r.supervisor or "[red]none[/]"
        if r.supervisor and r.supervisor_connected is False:
            sup += " [yellow](disconnected)[/]"
        t.add_row(r.host, "-" if r.desired is None else str(r.desired), live, " ".join(r.live), sup,
                  "-" if r.supervisor_age is None else f"{r.supervisor_age:.1f}s", " ".join(r.crash_loop) or "-", r.desired_by or "-")
    Console().print(t)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return run(_status, args)


def main(argv: Sequence[str] | None = None) -> int:
    """`corral` with these subcommands added (``python -m corral.cli.fleet fleet --host h``), for as
    long as cli/__init__.py does not list this module in COMMANDS yet."""
    import corral.cli as cli

    if not any(m.__name__ == "corral.cli.fleet" for m in cli.COMMANDS):
        cli.COMMANDS = (*cli.COMMANDS, sys.modules[__name__])
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
