"""Events: the live tail of ``corral.events.>`` with a filter."""

from __future__ import annotations

import datetime as dt

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input

from corral.tui.screens.base import TaskScreen
from corral.tui.store import EventRow
from corral.tui.widgets.synced_table import SyncedTable

COLUMNS = [("time", "time"), ("subject", "subject"), ("type", "event"), ("job", "job"), ("bot", "bot / actor"), ("detail", "detail")]
TYPE_STYLE = {"succeeded": "green", "failed": "yellow", "dead": "bold red", "replayed": "cyan", "purged": "magenta",
              "handed_back": "yellow", "operator": "bold blue"}


def clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def event_cells(row: EventRow) -> tuple:
    e = row.event
    detail = e.detail or e.state or (f"{e.duration * 1000:.1f} ms" if e.duration else "")
    if e.attempt:
        detail = f"attempt {e.attempt}  {detail}".rstrip()
    return (clock(e.ts), row.subject.removeprefix("corral.events."), Text(str(e.type), style=TYPE_STYLE.get(str(e.type), "")),
            e.job_id or "", e.bot or e.actor or "", detail)


def matches(row: EventRow, needle: str) -> bool:
    if not needle:
        return True
    e = row.event
    hay = " ".join(filter(None, (row.subject, str(e.type), e.job_id, e.bot, e.actor, e.kind, e.queue, e.detail, e.state)))
    return all(word in hay.lower() for word in needle.lower().split())


class EventsScreen(TaskScreen):
    TITLE_TEXT = "events"
    BINDINGS = [Binding("slash", "focus_filter", "Filter", key_display="/"), Binding("escape", "clear_filter", "Clear filter", show=False)]

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter: words that must all appear (type, job id, bot, detail)", id="events-filter")
        yield SyncedTable(COLUMNS, id="events-table")

    def on_mount(self) -> None:
        self._shown = -1
        super().on_mount()
        self.query_one("#events-table").focus()

    def redraw(self) -> None:
        if self.store.events_seen == self._shown:
            return
        self._shown = self.store.events_seen
        needle = self.query_one("#events-filter", Input).value.strip()
        table = self.query_one("#events-table", SyncedTable)
        at_bottom = table.cursor_row >= table.row_count - 1
        table.sync((str(r.n), event_cells(r)) for r in self.store.events if matches(r, needle))
        if at_bottom and table.row_count:
            table.move_cursor(row=table.row_count - 1)

    @on(Input.Changed, "#events-filter")
    def _refilter(self) -> None:
        self._shown = -1
        self.redraw()

    def action_focus_filter(self) -> None:
        self.query_one("#events-filter").focus()

    def action_clear_filter(self) -> None:
        self.query_one("#events-filter", Input).value = ""
        self.query_one("#events-table").focus()
