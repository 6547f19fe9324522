"""`corral tui`: open the dashboard, in this terminal or (``--web``) in a browser on a loopback port."""

from __future__ import annotations

import argparse
import shlex
import sys

from corral.cli.common import add_server, settings
from corral.core.errors import ConfigError
from corral.core.spawn import corral_argv

WEB_HOST = "127.0.0.1"  #: loopback only: the page is the dashboard with every operator action, and has no login


def register(sub) -> None:
    p = sub.add_parser("tui", help="open the live dashboard (bots, jobs, dead letters, events, logs)")
    add_server(p)
    p.add_argument("--monitor", metavar="URL", help="nats-server monitoring URL for server stats (e.g. http://127.0.0.1:8222)")
    p.add_argument("--web", action="store_true", help=f"serve the dashboard to a browser on http://{WEB_HOST}:PORT instead")
    p.add_argument("--port", type=int, default=8000, help="the --web port (default 8000)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    if args.web:
        return _serve(args)
    from corral.tui.app import run_dashboard  # Textual is imported only when the dashboard opens

    run_dashboard(settings(args), monitor_url=args.monitor)
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Each browser tab runs its own `corral tui` behind textual-serve's websocket (xterm.js in the page)."""
    try:
        from textual_serve.server import Server
    except ImportError:
        raise ConfigError("`corral tui --web` needs textual-serve: pip install 'corral[web]'") from None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} must be 1-65535")
    argv = corral_argv("tui", *(("--server", args.server) if args.server else ()), *(("--monitor", args.monitor) if args.monitor else ()))
    print(f"corral dashboard on http://{WEB_HOST}:{args.port}", file=sys.stderr, flush=True)
    Server(shlex.join(argv), host=WEB_HOST, port=args.port, title="corral").serve()
    return 0
