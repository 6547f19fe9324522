"""Progress for long operations: a rich bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield ``update(done)``; renders a bar on a TTY and one line per second otherwise."""
    if sys.stderr.isatty():
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}/s"),
            TimeRemainingColumn(), transient=False, console=None,
        ) as bar:
            task = bar.add_task(description, total=total, rate="0")
            start = time.monotonic()

            def update_bar(done: int) -> None:
                rate = done / max(time.monotonic() - start, 1e-6)
                bar.update(task, completed=done, rate=f"{rate:,.0f}")

            yield update_bar
        return
    last = [0.0]
    start = time.monotonic()

    def update_line(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1 or done == total:
            last[0] = now
            of = f"/{total}" if total else ""
            print(f"{description}: {done}{of} ({done / max(now - start, 1e-6):,.0f}/s)", file=sys.stderr, flush=True)

    yield update_line
