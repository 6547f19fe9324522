"""The `corral` command: one entry point, a subcommand per module in this package."""

from __future__ import annotations

import argparse
import sys

import stamina
from collections.abc import Sequence
from types import ModuleType

from corral.cli import (
    backup, bench, bot, chaos, cluster, control, dlq, fair, features, fleet, health, inspect, ledger, limits, provision, submit, up,
)
from corral.cli import exits
from corral.core.log import configure
from corral.cli import tui as tui_cli

COMMANDS: tuple[ModuleType, ...] = (
    up, provision, submit, bot, inspect, dlq, health, control, features, limits, fair, fleet, chaos, backup, cluster, ledger, bench,
    tui_cli,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral", description="corral: distributed jobs on NATS JetStream.",
                                epilog="Exit codes: 0 done, 1 failed, 2 usage, 3 not found, 4 nothing done, "
                                "5 server unreachable, 130 interrupted (docs/cli.md).")
    p.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt", help="structured log line format (default logfmt)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    _own_usage(p)
    return p


def subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of every subcommand under ``p``, nested ones (``dlq replay``) included."""
    found = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found += [child, *subparsers(child)]
    return found


def _own_usage(p: argparse.ArgumentParser) -> None:
    # argparse hands flags a subcommand does not know back to the top level, which then prints the
    # top-level usage; each subcommand remembers its parser so main() can complain with its usage.
    for child in subparsers(p):
        child.set_defaults(_parser=child)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args, unknown = p.parse_known_args(argv)
    if unknown:
        getattr(args, "_parser", p).error(f"unrecognized arguments: {' '.join(unknown)}")
    configure(args.log_format)
    stamina.instrumentation.set_on_retry_hooks([])  # corral logs its own waits, in its own format
    try:
        code = args.func(args) or exits.OK
        sys.stdout.flush()  # a closed pipe fails here, inside the handler, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BaseException as e:  # every exit goes through the one table; a bug re-raises below
        if isinstance(exits.leaf(e), BrokenPipeError):
            exits.silence_stdout()
            return exits.BROKEN_PIPE
        if isinstance(exits.leaf(e), KeyboardInterrupt):
            return exits.INTERRUPTED
        explained = exits.explain(e)
        if explained is None:
            raise  # a bug in corral: the traceback is the report
        code, message = explained
        print(f"corral: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
