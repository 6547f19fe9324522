"""`corral tui`: open the dashboard."""

from __future__ import annotations

import argparse

from corral.cli.common import add_server, settings


def register(sub) -> None:
    p = sub.add_parser("tui", help="open the live dashboard (bots, jobs, dead letters, events)")
    add_server(p)
    p.add_argument("--monitor", metavar="URL", help="nats-server monitoring URL for server stats (e.g. http://127.0.0.1:8222)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    from corral.tui.app import run_dashboard  # Textual is imported only when the dashboard opens

    run_dashboard(settings(args), monitor_url=args.monitor)
    return 0
