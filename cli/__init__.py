"""The `corral` command: one entry point, a subcommand per module in this package."""

from __future__ import annotations

import argparse
import sys

import stamina
from collections.abc import Sequence

from corral.cli import backup, bench, bot, chaos, cluster, control, dlq, features, fleet, health, inspect, ledger, limits, provision, submit, up
from corral.core.errors import ConfigError, CorralError
from corral.core.log import configure
from corral.cli import tui as tui_cli

COMMANDS = (up, provision, submit, bot, inspect, dlq, health, control, features, limits, fleet, chaos, backup, cluster, ledger, bench, tui_cli)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral", description="corral: distributed jobs on NATS JetStream.")
    p.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt", help="structured log line format (default logfmt)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_format)
    stamina.instrumentation.set_on_retry_hooks([])  # corral logs its own waits, in its own format
    try:
        return args.func(args) or 0
    except ConfigError as e:
        print(f"corral: {e}", file=sys.stderr)
        return 2
    except CorralError as e:
        print(f"corral: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
