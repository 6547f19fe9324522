"""Features: schedules (add, remove), fan-in groups and held leased locks, one table each.

The tables come from :mod:`corral.tui.features`, read by the app every few seconds
while this screen is shown (``CorralApp.refresh_features``). Adding and removing
a schedule go through the app (``CorralApp.add_schedule`` / ``remove_schedule``),
which records them on ``corral.events.ops.schedule``.

Each table is one :class:`Section` in :data:`SECTIONS`; the limits table is
read-only here (`corral limit set|rm` changes them).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from corral.core.names import FIRING_PREFIX
from corral.tui.features import Features, GroupRow, LockRow, ScheduleRow
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.schedule_form import AddScheduleScreen, ScheduleRequest
from corral.tui.widgets.synced_table import Row, SyncedTable

STALE_FEATURES = 10.0  #: seconds without a read before the status line says so
STATE_STYLE = {"succeeded": "green", "dead": "bold red", "failed": "yellow", "pending": "yellow", "started": "cyan"}


def duration(seconds: float) -> str:
    """``42s``, ``12m``, ``3h``, ``2d``: short enough for an 80-column table."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def next_cell(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    if at <= now:
        return "due"
    clock = dt.datetime.fromtimestamp(at).strftime("%H:%M:%S" if at - now < 86400 else "%m-%d %H:%M")
    return f"in {duration(at - now)} ({clock})"


def schedule_rows(f: Features, now: float) -> list[Row]:
    def cells(r: ScheduleRow) -> tuple:
        s, job = r.schedule, r.schedule.job
        target = s.target.removeprefix(FIRING_PREFIX).replace(".", "/")
        args = Text(json.dumps(job.args, separators=(",", ":"), default=str)[:30] if job else "?")  # literal, not markup
        return (s.name, s.spec, next_cell(r.upcoming(now), now), job.kind if job else "? (unreadable)", target, args)
    return [(r.schedule.name, cells(r)) for r in f.schedules]


def submitted_cell(g: GroupRow) -> Text:
    if g.callback_state == "waiting":
        return Text(f"no ({g.size - g.done} to go)" if g.size is not None else "no")
    return Text(f"yes · {g.callback_state}", style=STATE_STYLE.get(g.callback_state, ""))


def group_rows(f: Features, now: float) -> list[Row]:
    return [(g.group, (g.group, f"{g.done}/{'?' if g.size is None else g.size}", g.callback_kind or "?", submitted_cell(g)))
            for g in f.groups]


def lock_rows(f: Features, now: float) -> list[Row]:
    def cells(lk: LockRow) -> tuple:
        held = "-" if lk.since is None else duration(max(now - lk.since, 0))
        left = "-" if lk.expires_at is None else (f"{lk.expires_at - now:.1f}s" if lk.expires_at > now else "lapsing")
        return (lk.name, lk.owner, held, left)
    return [(lk.name, cells(lk)) for lk in f.locks]


def limit_rows(f: Features, now: float) -> list[Row]:
    def cells(s) -> tuple:
        cap = f"{s.slots_held}/{s.limit.concurrency}" if s.limit.concurrency else "-"
        rate = f"{s.window_count}/{s.limit.rate} per {s.limit.per:g}s" if s.limit.rate else "-"
        full = bool(s.limit.concurrency) and s.slots_held >= s.limit.concurrency
        return (s.kind, Text(cap, style="yellow" if full else ""), rate)
    return [(s.kind, cells(s)) for s in f.limits]


FAIR_SHOWN = 5  #: fairness keys named on the status line, most jobs waiting first


def fair_line(waiting: dict[str, int]) -> str:
    """``fair waiting: A 18,342 · B 12 (+3 keys)``: the keys with the longest lines (`corral fair status` has all)."""
    top = sorted(waiting.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "fair waiting: " + " · ".join(f"{k} {n:,}" for k, n in top[:FAIR_SHOWN])
    return text + (f" (+{len(top) - FAIR_SHOWN} keys)" if len(top) > FAIR_SHOWN else "")


@dataclass(frozen=True)
class Section:
    """One table: its id (``#<key>-table``), its columns, its rows from a read, what it says when empty."""

    key: str
    title: str
    columns: list[tuple[str, str]]
    rows: Callable[[Features, float], list[Row]]
    empty: str


SECTIONS = (
    Section("schedules", "schedules", [("name", "name"), ("spec", "when"), ("next", "next firing"), ("kind", "kind"),
                                       ("target", "queue/priority"), ("args", "args")],
            schedule_rows, "none: a adds one (or `corral schedule add`)"),
    Section("groups", "fan-in groups (a member finished lately)", [("group", "group"), ("done", "done/size"),
                                                                   ("callback", "callback"), ("submitted", "callback submitted")],
            group_rows, "none: `corral group submit` starts one"),
    Section("locks", "leased locks held", [("name", "lock"), ("owner", "owner (bot/job)"), ("held", "held for"),
                                           ("left", "lease left")],
            lock_rows, "none held"),
    Section("limits", "limits per kind (fleet-wide)", [("kind", "kind"), ("cap", "running/cap"), ("rate", "this window/rate")],
            limit_rows, "none: `corral limit set KIND --concurrency N --rate N/1s`"),
)


class FeaturesScreen(TaskScreen):
    TITLE_TEXT = "features"
    BINDINGS = [
        Binding("a", "add_schedule", "Add schedule"),
        Binding("d,delete", "remove_schedule", "Remove schedule", key_display="d"),
        Binding("r", "refresh", "Refresh now"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Label("", id="features-status")
        for section in SECTIONS:
            yield Label(section.title, id=f"{section.key}-title", classes="section")
            yield SyncedTable(section.columns, id=f"{section.key}-table")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#schedules-table").focus()
        self.corral.refresh_features(force=True)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.corral.refresh_features(force=True)

    def redraw(self) -> None:
        store, now = self.store, time.time()
        for section in SECTIONS:
            rows = section.rows(store.features, now)
            self.query_one(f"#{section.key}-table", SyncedTable).sync(rows)
            count = f"{len(rows)}" if rows or not store.features_at else section.empty
            self.query_one(f"#{section.key}-title", Label).update(f"{section.title}: {escape(count)}")
        self.query_one("#features-status", Label).update(self._status(now))

    def _status(self, now: float) -> str:
        store = self.store
        if not store.features_at:
            return "reading…" if not store.features_error else f"[red]cannot read: {escape(store.features_error)}[/]"
        status = f"read {now - store.features_at:.0f}s ago  ·  a add a schedule, d remove the selected one, Tab next table"
        if store.features.fair_waiting:
            status += f"\n{escape(fair_line(store.features.fair_waiting))}"
        if store.features_error and now - store.features_at > STALE_FEATURES:
            status += f"  ·  [red]not refreshed: {escape(store.features_error)}[/]"
        return status

    def action_add_schedule(self) -> None:
        def done(req: ScheduleRequest | None) -> None:
            if req is not None:
                self.corral.add_schedule(req)
        self.app.push_screen(AddScheduleScreen(), done)

    def action_remove_schedule(self) -> None:
        name = self.query_one("#schedules-table", SyncedTable).selected_key()
        row = next((r for r in self.store.features.schedules if r.schedule.name == name), None)
        if row is None:
            self.notify("select a schedule first", severity="warning")
            return
        s = row.schedule
        self.corral.confirm_then(
            f"Remove schedule {s.name} ({s.spec}, {s.job.kind if s.job else '?'})? It will not fire again.",
            lambda: self.corral.remove_schedule(s.name), yes="Remove",
        )

    def action_refresh(self) -> None:
        self.corral.refresh_features(force=True)
