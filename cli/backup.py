"""`corral backup DIR` and `corral restore DIR`: streams, consumers and messages to a folder and back."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corral.core.backup import backup, restore
from corral.cli.common import add_json, add_server, print_json, run, settings
from corral.core.connect import connect
from corral.core.log import get_logger
from corral.streams.provision import create_missing


def register(sub) -> None:
    for name, text in (("backup", "write every stream (config, consumers, messages) into a new folder"),
                       ("restore", "recreate streams, messages and consumers from a backup folder (empty deployment)")):
        p = sub.add_parser(name, help=text)
        add_server(p)
        add_json(p)
        p.add_argument("folder", type=Path, metavar="DIR", help="the backup folder (backup: must not exist yet)")
        p.set_defaults(func=cmd, action=name)


def _progress(stream: str, n: int) -> None:
    print(f"{stream}: {n} messages", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    nc = await connect(settings(args), get_logger(args.action), wait=False)
    try:
        op = backup if args.action == "backup" else restore
        done = await op(nc, args.folder, _progress)
        if args.action == "restore":
            await create_missing(nc)
    finally:
        await nc.close()
    if args.json:
        print_json([{"stream": b.stream, "messages": b.messages, "consumers": b.consumers} for b in done])
    else:
        for b in done:
            print(f"{args.action}: {b.stream:16} {b.messages:>8} messages  {b.consumers} consumer(s)")
    return 0


def cmd(args: argparse.Namespace) -> int:
    return run(_run, args)
