"""`corral provision`: apply streams/*.json idempotently."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corral.cli.common import add_json, add_server, print_json, run, settings
from corral.core.connect import connect
from corral.core.errors import ConfigError
from corral.core.log import get_logger
from corral.streams import HERE, load_declarations
from corral.streams.migrate import REFUSAL, migrate
from corral.streams.provision import Action, provision_url


def register(sub) -> None:
    p = sub.add_parser("provision", help="create or update every stream, consumer and KV bucket from streams/")
    add_server(p)
    add_json(p)
    p.add_argument("--dir", type=Path, default=HERE, help="folder of declarations (default: the installed streams/)")
    p.add_argument("--replicas", type=int, choices=(1, 3, 5), help="override every stream's num_replicas (3 on a cluster)")
    p.add_argument("--migrate", action="store_true",
                   help="rebuild a previous version's work-queue CORRAL_JOBS as limits retention, keeping every job "
                        "(bots stopped; resumable), then provision the rest")
    p.add_argument("--force", action="store_true", help="with --migrate: go on although bots look live")
    p.set_defaults(func=cmd)


async def _provision(args: argparse.Namespace) -> int:
    decls = load_declarations(args.dir)
    if args.replicas:
        decls = [d.replicated(args.replicas) for d in decls]
    if args.force and not args.migrate:
        raise ConfigError("--force only goes with --migrate")
    if args.migrate:
        nc = await connect(settings(args), get_logger("provision"), wait=False)
        try:
            await migrate(nc, decls, force=args.force, say=lambda line: print(line, file=sys.stderr, flush=True))
        finally:
            await nc.close()
    reports = await provision_url(settings(args), decls, log=get_logger("provision"))
    if args.json:
        print_json([{"kind": r.decl.kind, "name": r.decl.name, "action": r.action, "diff": r.diff, "error": r.error} for r in reports])
    else:
        for r in reports:
            print(r.line())
    if any(r.error == REFUSAL for r in reports):
        print(f"corral provision: {REFUSAL}", file=sys.stderr)
    return 1 if any(r.action == Action.CONFLICT for r in reports) else 0


def cmd(args: argparse.Namespace) -> int:
    return run(_provision, args)
