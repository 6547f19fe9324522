"""Events: the live tail of ``corral.events.>`` with a filter."""

from __future__ import annotations

import datetime as dt

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input

from corral.core.names import EVENTS_PREFIX
from corral.tui.describe import describe_event
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.describe import DescribeScreen
from corral.tui.store import EventRow
from corral.tui.widgets.detail_pane import DetailPane
from corral.tui.widgets.fit import Col, short_id
from corral.tui.widgets.synced_table import SyncedTable

#: The subject repeats the job id, so the table shows the short id (or, for an operator or fleet
#: event, the subject's tail) and the subject is read whole in the detail pane.
COLUMNS = [Col("time", "time", 0), Col("type", "event", 0), Col("job", "job / about", 0, max=16),
           Col("bot", "bot / actor", 1, min=8, max=28), Col("detail", "detail", 1, flex=True, max=400),
           Col("subject", "subject", detail_only=True), Col("job_id", "job id", detail_only=True),
           Col("kind", "kind", detail_only=True), Col("queue", "queue", detail_only=True)]
TYPE_STYLE = {"succeeded": "green", "failed": "yellow", "dead": "bold red", "replayed": "cyan", "purged": "magenta",
              "handed_back": "yellow", "operator": "bold blue", "debounced": "cyan", "superseded": "dim"}


def clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def about(row: EventRow) -> str:
    """What an event is about in a few characters: its job's short id, else its subject's tail (``ops.fleet``)."""
    return short_id(row.event.job_id) if row.event.job_id else row.subject.removeprefix(EVENTS_PREFIX)


def event_cells(row: EventRow) -> tuple:
    e = row.event
    detail = e.detail or e.state or (f"{e.duration * 1000:.1f} ms" if e.duration else "")
    if e.attempt:
        detail = f"attempt {e.attempt}  {detail}".rstrip()
    return (clock(e.ts), Text(str(e.type), style=TYPE_STYLE.get(str(e.type), "")), about(row), e.bot or e.actor or "", detail,
            row.subject, e.job_id or "", e.kind or "", e.queue or "")


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
        yield SyncedTable(COLUMNS, id="events-table", filterable=False)
        yield DetailPane(long=("detail",), skip=("job / about",), empty="no event selected", id="events-detail")

    def on_mount(self) -> None:
        self._shown = -1
        self._newest: str | None = None  #: the last row's key after the previous redraw
        super().on_mount()
        self.query_one("#events-table").focus()

    def redraw(self) -> None:
        if self.store.events_seen == self._shown:
            return
        self._shown = self.store.events_seen
        needle = self.query_one("#events-filter", Input).value.strip()
        table = self.query_one("#events-table", SyncedTable)
        # Follow the tail while the cursor is on the newest row. Judged by row key, not row index,
        # because a resize rebuilds the table's columns (and a rebuild moves the cursor back to its row).
        following = table.row_count == 0 or table.selected_key() == self._newest
        rows = [(str(r.n), event_cells(r)) for r in self.store.events if matches(r, needle)]
        table.sync(rows)
        self._newest = rows[-1][0] if rows else None
        if following and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._show_detail()

    @on(DataTable.RowHighlighted, "#events-table")
    def _show_detail(self) -> None:
        table = self.query_one("#events-table", SyncedTable)
        self.query_one("#events-detail", DetailPane).show_row(table, table.selected_key())

    @on(DataTable.RowSelected, "#events-table")
    def _describe(self, event: DataTable.RowSelected) -> None:
        """Enter: every field of the event (``j`` from there: its job)."""
        row = next((r for r in self.store.events if str(r.n) == event.row_key.value), None)
        if row is not None:
            self.app.push_screen(DescribeScreen(f"event {row.event.type}", describe_event(row), job_id=row.event.job_id or None))

    @on(Input.Changed, "#events-filter")
    def _refilter(self) -> None:
        self._shown = -1
        self.redraw()

    def action_focus_filter(self) -> None:
        self.query_one("#events-filter").focus()

    def action_clear_filter(self) -> None:
        self.query_one("#events-filter", Input).value = ""
        self.query_one("#events-table").focus()
