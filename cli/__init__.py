"""The `corral` command: one entry point, a subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys

import stamina
from collections.abc import Sequence
from types import ModuleType

from corral.cli import exits
from corral.core.log import LEVELS, configure

#: The subcommand modules, in `corral --help` order; imported when a parser is built.
COMMAND_MODULES = (
    "up", "provision", "submit", "bot", "inspect", "dlq", "health", "control", "features", "limits", "fair", "fleet", "chaos", "backup",
    "cluster", "ledger", "bench", "tui",
)
#: Commands whose own module is all that `corral NAME ...` needs. A bot runs on every host for
#: as long as the host does, so it does not carry the other commands' imports (rich, the chaos
#: harness, the benchmarks): about 4 MB of RSS per bot.
ALONE = {"bot": "bot"}
_TOP_VALUED = ("--log-format", "--log-level")  #: top-level options that take a value
COMMANDS: tuple[ModuleType, ...]  #: set by __getattr__ on first use


def __getattr__(name: str) -> tuple[ModuleType, ...]:
    if name == "COMMANDS":  # every subcommand module, imported on first use (cli/fleet.py extends it)
        global COMMANDS
        COMMANDS = tuple(importlib.import_module(f"corral.cli.{m}") for m in COMMAND_MODULES)
        return COMMANDS
    raise AttributeError(name)


def _alone(argv: Sequence[str]) -> tuple[ModuleType, ...] | None:
    """The one module ``argv``'s command needs, if it is in :data:`ALONE`; None: build the whole CLI."""
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            return None
        if arg in _TOP_VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return (importlib.import_module(f"corral.cli.{ALONE[arg]}"),) if arg in ALONE else None
    return None


def parser(modules: Sequence[ModuleType] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral", description="corral: distributed jobs on NATS JetStream.",
                                epilog="Exit codes: 0 done, 1 failed, 2 usage, 3 not found, 4 nothing done, "
                                "5 server unreachable, 130 interrupted (docs/cli.md).")
    p.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt", help="structured log line format (default logfmt)")
    p.add_argument("--log-level", choices=LEVELS, default="info",
                   help="info (default) or debug: debug adds a line per job on its happy path")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import corral.cli as cli

    for module in modules or cli.COMMANDS:
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
    p = parser(_alone(sys.argv[1:] if argv is None else argv))
    args, unknown = p.parse_known_args(argv)
    if unknown:
        getattr(args, "_parser", p).error(f"unrecognized arguments: {' '.join(unknown)}")
    configure(args.log_format, args.log_level)
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
