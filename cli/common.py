"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from corral.core.settings import Settings
from corral.core.control import actor  # noqa: F401 - the CLI commands import it from here


def add_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="NATS URL(s), comma-separated (default: $CORRAL_NATS_URL or nats://127.0.0.1:4222)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(server=getattr(args, "server", None))


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return anyio.run(fn, *args)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{x} must be greater than 0")
    return x
