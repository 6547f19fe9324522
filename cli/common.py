"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import anyio.to_thread

from corral.core.settings import Settings
from corral.core.control import actor  # noqa: F401 - the CLI commands import it from here


def add_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="NATS URL(s), comma-separated (default: $CORRAL_NATS_URL or nats://127.0.0.1:4222)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_action(sub, name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """An ACTION of a command (``corral fair weight``): ``--server`` and ``--json``, dispatched to ``func`` as ``args.action``."""
    p = sub.add_parser(name, help=help)
    add_server(p)
    add_json(p)
    p.set_defaults(func=func, action=name)
    return p


def settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(server=getattr(args, "server", None))


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return anyio.run(fn, *args)


async def ask(prompt: str) -> str:
    """input() off the event loop, so an open connection keeps answering the server's pings while a person reads.

    The read runs on a daemon thread (an unanswered prompt must not hold the interpreter open after Ctrl-C),
    and the event loop waits for it on a worker thread that the `finally` always releases.
    """
    answer: list[str] = []
    failure: list[BaseException] = []
    ready = threading.Event()

    def read() -> None:
        try:
            answer.append(input(prompt))
        except BaseException as e:  # noqa: BLE001 - handed back to the awaiting task, which re-raises it
            failure.append(e)
        finally:
            ready.set()

    threading.Thread(target=read, name="corral prompt", daemon=True).start()
    try:
        await anyio.to_thread.run_sync(ready.wait, abandon_on_cancel=True)
    finally:
        ready.set()
    if failure:
        raise failure[0]
    return answer[0]


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(line: str, titles: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> None:
    """A status table: ``titles``, then each row, through one ``str.format`` ``line`` (``"{:20} {:>7}"``) so the
    columns line up; ``empty`` alone when there are no rows."""
    rows = list(rows)
    if not rows:
        print(empty)
        return
    print(line.format(*titles))
    for row in rows:
        print(line.format(*row))


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


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds from ``5``, ``5s``, ``500ms``, ``2m`` or ``1h``; greater than 0."""
    number, unit = text.strip(), "s"
    for suffix in ("ms", "s", "m", "h"):
        if number.endswith(suffix):
            number, unit = number[: -len(suffix)], suffix
            break
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use 5s, 500ms, 2m or 1h") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0")
    return seconds
