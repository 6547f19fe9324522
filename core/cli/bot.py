"""`corral bot`: run one bot daemon in the foreground."""

from __future__ import annotations

import argparse

from bots.bot import Bot
from bots.config import BotConfig
from core.cli.common import add_server, positive_float, positive_int, run, settings
from core.handlers import Registry
from core.log import get_logger
from core.names import PRIORITIES, check_token


def register(sub) -> None:
    p = sub.add_parser("bot", help="run a bot: claim jobs, run handlers, record results (SIGTERM drains)")
    add_server(p)
    p.add_argument("--name", help="unique bot name (default: HOST-PID); a restarted bot reuses its name")
    p.add_argument("--queue", default="default")
    p.add_argument("--priority", default="normal", choices=PRIORITIES)
    p.add_argument("--concurrency", type=positive_int, default=8, help="jobs run at once (default 8)")
    p.add_argument("--ttl", type=positive_float, default=10.0, help="liveness key TTL in seconds (default 10)")
    p.add_argument("--drain-timeout", type=positive_float, default=30.0, help="seconds a draining bot lets jobs finish (default 30)")
    p.add_argument("--backoff-base", type=positive_float, default=1.0, help="first retry delay in seconds (default 1)")
    p.add_argument("--backoff-max", type=positive_float, default=60.0, help="longest retry delay in seconds (default 60)")
    p.add_argument("--poison-after", type=positive_int, default=3, help="deliveries dying with no outcome before quarantine (default 3)")
    p.add_argument("--sweep-interval", type=positive_float, default=60.0, help="seconds between sweeps for lingering jobs (default 60)")
    p.add_argument("--handler", action="append", default=[], metavar="KIND=MODULE:FUNCTION", help="register a handler (repeatable)")
    p.set_defaults(func=cmd)


def config_from(args: argparse.Namespace) -> BotConfig:
    fields = dict(
        queues=(check_token(args.queue, "queue"),), priority=args.priority, concurrency=args.concurrency,
        liveness_ttl=args.ttl, drain_timeout=args.drain_timeout, backoff_base=args.backoff_base,
        backoff_max=args.backoff_max, poison_after=args.poison_after, sweep_interval=args.sweep_interval,
        handlers=tuple(args.handler),
    )
    if args.name:
        fields["name"] = check_token(args.name, "bot name")
    return BotConfig(**fields)


def cmd(args: argparse.Namespace) -> int:
    config = config_from(args)
    registry = Registry.build(list(config.handlers))  # fail fast on a bad --handler, before connecting
    bot = Bot(settings(args), config, get_logger("bot"), registry)
    return run(bot.run)
