"""Overview: is the server up, how big are the streams, how busy are the queues, what needs attention."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

from corral.core.messages import EventType
from corral.core.names import PRIORITIES
from corral.tui.screens.base import TaskScreen
from corral.tui.widgets.fit import Col
from corral.tui.widgets.synced_table import SyncedTable

SPARK_SECONDS = 120
STREAM_COLUMNS = [Col("stream", "stream", 0), Col("messages", "messages", 0), Col("bytes", "bytes", 1)]
#: The state (paused or not) comes right after the name: it is what the operator acts on here.
CONSUMER_COLUMNS = [
    Col("consumer", "consumer", 0, min=12), Col("state", "state", 0), Col("pending", "pending", 0),
    Col("in_flight", "in flight", 1), Col("max", "max", 2), Col("redelivered", "redeliv.", 3), Col("waiting", "pulls", 4),
]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def split_consumer(name: str) -> tuple[str, str] | None:
    """``work-<queue>-<priority>`` -> (queue, priority), or None for another consumer."""
    if not name.startswith("work-"):
        return None
    queue, _, priority = name[5:].rpartition("-")
    return (queue, priority) if queue and priority in PRIORITIES else None


class OverviewScreen(TaskScreen):
    TITLE_TEXT = "overview"
    BINDINGS = [
        Binding("p", "pause", "Pause queue"),
        Binding("u", "resume", "Resume queue"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="overview-top"):
            with Vertical(id="overview-left"):
                yield Label("streams", classes="section")
                yield SyncedTable(STREAM_COLUMNS, id="streams")
                yield Label("queues (consumers)", classes="section")
                yield SyncedTable(CONSUMER_COLUMNS, id="consumers")
            with Vertical(id="overview-right"):
                yield Label("alerts", classes="section")
                yield Static(id="alerts")
                yield Label("bots", classes="section")
                yield Static(id="bot-states")
        yield Label("throughput (per second, last 2 minutes)", classes="section")
        for etype, label in ((EventType.SUCCEEDED, "completed"), (EventType.FAILED, "failed"), (EventType.DEAD, "dead")):
            with Horizontal(classes="spark-row"):
                yield Label(label, id=f"rate-{etype}", classes="spark-label")
                yield Sparkline([0] * SPARK_SECONDS, id=f"spark-{etype}", classes=f"spark-{etype}")

    def redraw(self) -> None:
        store = self.store
        snap = store.snapshot
        if snap is not None:
            self.query_one("#streams", SyncedTable).sync(
                (s.name, (s.name, str(s.messages) if s.present else Text("MISSING", style="bold red"), _size(s.bytes)))
                for s in snap.streams
            )
            self.query_one("#consumers", SyncedTable).sync(
                (c.name, (c.name, Text("paused", style="bold yellow") if c.paused else "active", str(c.pending),
                          str(c.in_flight), str(c.max_ack_pending), str(c.redelivered), str(c.waiting)))
                for c in snap.consumers
            )
        alerts = store.alerts()
        self.query_one("#alerts", Static).update(
            Text("\n".join(f"⚠ {a}" for a in alerts), style="bold red") if alerts else Text("✓ nothing needs attention", style="green")
        )
        states = Counter("dead" if r.gone_why == "expired" else "stopped" if r.gone_at else r.beat.state for r in store.bots.values())
        live = sum(1 for r in store.bots.values() if r.gone_at is None)
        lines = [f"{live} live"] + [f"  {state}: {n}" for state, n in sorted(states.items())]
        self.query_one("#bot-states", Static).update("\n".join(lines))
        for etype in (EventType.SUCCEEDED, EventType.FAILED, EventType.DEAD):
            series = store.rate_series(etype, SPARK_SECONDS)
            self.query_one(f"#spark-{etype}", Sparkline).data = series
            name = {"succeeded": "completed"}.get(str(etype), str(etype))
            self.query_one(f"#rate-{etype}", Label).update(f"{name} {store.rate(etype):.1f}/s")

    def _selected_queue(self) -> tuple[str, str] | None:
        key = self.query_one("#consumers", SyncedTable).selected_key()
        parsed = split_consumer(key) if key else None
        if parsed is None:
            self.notify("select a work-<queue>-<priority> consumer first", severity="warning")
        return parsed

    def action_pause(self) -> None:
        if (target := self._selected_queue()) is not None:
            self.corral.confirm_then(f"Pause queue {target[0]}/{target[1]}? Bots get no new jobs from it until resumed.",
                                     lambda: self.corral.pause_queue(*target), yes="Pause")

    def action_resume(self) -> None:
        if (target := self._selected_queue()) is not None:
            self.corral.resume_queue(*target)
