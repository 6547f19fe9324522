"""`corral bot`: run one bot daemon in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from corral.bots.bot import Bot
from corral.bots.config import BotConfig
from corral.cli.common import add_server, positive_float, positive_int, run, settings
from corral.core.handlers import BUILTINS, Registry
from corral.core.log import get_logger
from corral.core.names import PRIORITIES, check_token


def register(sub) -> None:
    p = sub.add_parser("bot", help="run a bot: claim jobs, run handlers, record results (SIGTERM drains)")
    add_server(p)
    p.add_argument("--name", help="unique bot name (default: HOST-PID); a restarted bot reuses its name")
    p.add_argument("--queue", action="append", metavar="QUEUE", help="queue to serve (repeatable; default: default)")
    p.add_argument("--priority", action="append", choices=PRIORITIES,
                   help="priority to serve (repeatable; default: all three, highest first)")
    p.add_argument("--fair-every", type=int, default=10, metavar="N",
                   help="every Nth start goes to lower priorities first, so they are not starved (default 10; 0: strict)")
    p.add_argument("--concurrency", type=positive_int,
                   help=f"jobs run at once (default {ASYNC_CONCURRENCY} when every --handler is async, "
                   f"{BLOCKING_CONCURRENCY} when one is sync or @process; docs/performance.md)")
    p.add_argument("--ttl", type=positive_float, default=10.0, help="liveness key TTL in seconds (default 10)")
    p.add_argument("--drain-timeout", type=positive_float, default=30.0, help="seconds a draining bot lets jobs finish (default 30)")
    p.add_argument("--backoff-base", type=positive_float, default=1.0, help="first retry delay in seconds (default 1)")
    p.add_argument("--backoff-max", type=positive_float, default=60.0, help="longest retry delay in seconds (default 60)")
    p.add_argument("--poison-after", type=positive_int, default=3,
                   help="deliveries that die with no outcome while running alone on their bot before quarantine "
                   "(default 3; docs/jobs.md)")
    p.add_argument("--sweep-interval", type=positive_float, default=60.0, help="seconds between sweeps for lingering jobs (default 60)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port (0: any free port)")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address for the endpoint (0.0.0.0 in a pod; default 127.0.0.1)")
    p.add_argument("--full-events", action="store_true",
                   help="also write the started and succeeded events of first deliveries, which readers otherwise "
                   "derive from the result (two more writes per job; docs/jobs.md#the-audit-trail)")
    p.add_argument("--lean-events", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--publish-timeout", type=positive_float, default=10.0,
                   help="seconds to wait for a result's ack before keeping it in the outbox (default 10)")
    p.add_argument("--no-group-commit", dest="group_commit", action="store_false",
                   help="publish every result on its own, never as atomic batches (by default a bot batches "
                   "the results that finish together when it measures that faster on its server)")
    p.add_argument("--no-eager", dest="eager", action="store_false",
                   help="run every job on the full path: no eager runs of plain async first deliveries "
                   "(docs/performance.md, \"Eager runs\"); for comparison and as an escape hatch")
    p.add_argument("--outbox", type=Path, help="folder for results/events awaiting an unreachable server "
                   "(default: $XDG_STATE_HOME or ~/.local/state, /corral/outbox/NAME); 'none' disables it")
    p.add_argument("--handler", action="append", default=[], metavar="KIND=MODULE:FUNCTION[@process|@batch[:SIZE[:WAIT]]]",
                   help="register a handler (repeatable); @process runs a sync one in a child process that "
                   "cancel, timeout and drain really stop (docs/features.md#cancellation); @batch hands an async one "
                   "a list of up to SIZE jobs (default 20) gathered within WAIT (default 50ms) (docs/features.md#batches)")
    p.set_defaults(func=cmd)


#: Jobs at once for a bot whose handlers are all async: they wait on the server (the result's
#: fsync), not on a CPU, so more in flight means fuller pull requests, commit rounds and socket
#: writes, which cost the bot and the server less per job (docs/performance.md: in interleaved
#: 4-bot drains of 20,000 no-op jobs, 128 / 192 / 256 ran 20.8-21.8k / 22.7-22.8k / 23.5-23.7k
#: jobs/s on a lazy server, and 256 beat 64 under ``always`` by 1.8-2.3x). The peers' defaults are
#: of this order (taskiq 100 async tasks, Temporal and Hatchet 100 slots). The price: one bot may
#: take up to this many jobs of a burst that another idle bot could have started.
ASYNC_CONCURRENCY = 256
#: ... and when one is sync (a worker thread per job) or @process (a child process per job).
BLOCKING_CONCURRENCY = 8


def default_concurrency(registry: Registry) -> int:
    """How many jobs a bot serving ``registry``'s ``--handler`` kinds runs at once, unless told."""
    given = [fn for kind, fn in registry.handlers.items() if BUILTINS.get(kind) is not fn]
    return ASYNC_CONCURRENCY if all(Registry.is_async(fn) for fn in given) else BLOCKING_CONCURRENCY


def warn_small_batches(registry: Registry, concurrency: int) -> None:
    """A job waiting in its batch holds a worker slot, so fewer slots than the size cap every batch."""
    for kind, spec in sorted(registry.batches.items()):
        if concurrency < spec.size:
            print(f"corral bot: warning: kind {kind!r} batches up to {spec.size} jobs but --concurrency is "
                  f"{concurrency}, so its batches hold at most {concurrency}", file=sys.stderr)


def config_from(args: argparse.Namespace, registry: Registry | None = None) -> BotConfig:
    registry = registry or Registry.build(list(args.handler))
    fields = dict(
        queues=tuple(check_token(q, "queue") for q in args.queue or ["default"]),
        priorities=tuple(p for p in PRIORITIES if p in (args.priority or PRIORITIES)),
        fair_every=max(args.fair_every, 0), concurrency=args.concurrency or default_concurrency(registry),
        liveness_ttl=args.ttl, drain_timeout=args.drain_timeout, backoff_base=args.backoff_base,
        backoff_max=args.backoff_max, poison_after=args.poison_after, sweep_interval=args.sweep_interval,
        handlers=tuple(args.handler), publish_timeout=args.publish_timeout, full_events=args.full_events,
        metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
        group_commit=args.group_commit,
        eager=args.eager,
    )
    if args.name:
        fields["name"] = check_token(args.name, "bot name")
    config = BotConfig(**fields)
    if str(args.outbox).lower() == "none":
        return config
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return replace(config, outbox_dir=args.outbox or state / "corral" / "outbox" / config.name)


def cmd(args: argparse.Namespace) -> int:
    if args.lean_events:
        # Lean is the default now; the flag is kept so existing unit files and scripts still start.
        print("corral bot: --lean-events is the default now and does nothing; --full-events restores the full trail",
              file=sys.stderr)
    registry = Registry.build(list(args.handler))  # fail fast on a bad --handler, before connecting
    config = config_from(args, registry)
    warn_small_batches(registry, config.concurrency)
    bot = Bot(settings(args), config, get_logger("bot"), registry)
    return run(bot.run)
