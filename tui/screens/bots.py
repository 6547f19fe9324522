"""Bots: every bot in the liveness bucket, live from the KV watch; drain one."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from corral.tui.screens.base import TaskScreen
from corral.tui.store import BotRow
from corral.tui.widgets.synced_table import SyncedTable

COLUMNS = [
    ("name", "bot"), ("host", "host"), ("pid", "pid"), ("state", "state"), ("current", "current job"),
    ("heartbeat", "heartbeat"), ("done", "done"), ("failed", "failed"), ("dead", "dead"), ("version", "version"),
]
STATE_STYLE = {"ready": "green", "processing": "bold cyan", "error": "bold red", "shutting_down": "yellow",
               "health_check": "yellow", "registering": "yellow", "initializing": "yellow"}


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def bot_cells(row: BotRow, now: float) -> tuple:
    b = row.beat
    if row.gone_at is not None:
        state = Text("dead", style="bold white on red") if row.gone_why == "expired" else Text("stopped", style="bold yellow")
    else:
        state = Text(b.state, style=STATE_STYLE.get(b.state, ""))
    if b.current and row.gone_at is None:
        c = b.current[0]
        current = f"{c.id[:12]} {c.kind} {now - c.since:.1f}s" + (f" +{len(b.current) - 1}" if len(b.current) > 1 else "")
    else:
        current = "-"
    return (b.name, b.host, str(b.pid), state, current, _age(max(now - b.heartbeat_at, 0)),
            str(b.done), str(b.failed), str(b.dead), b.version)


class BotsScreen(TaskScreen):
    TITLE_TEXT = "bots"
    BINDINGS = [Binding("d", "drain", "Drain bot")]

    def compose_body(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="bots-table")

    def redraw(self) -> None:
        now = time.time()
        rows = sorted(self.store.bots.values(), key=lambda r: r.beat.name)
        self.query_one("#bots-table", SyncedTable).sync((r.beat.name, bot_cells(r, now)) for r in rows)

    def action_drain(self) -> None:
        name = self.query_one("#bots-table", SyncedTable).selected_key()
        row = self.store.bots.get(name) if name else None
        if row is None or row.gone_at is not None:
            self.notify("select a live bot to drain", severity="warning")
            return
        jobs = len(row.beat.current)
        self.corral.confirm_then(
            f"Drain bot {name}? It stops claiming, finishes its {jobs} running job(s), deregisters and exits.",
            lambda: self.corral.drain_bot(name), yes="Drain",
        )
