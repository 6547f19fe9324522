"""Logs: a live tail of every bot's and supervisor's log lines (``CORRAL_LOGS``), filtered as you type.

The filter is words: ``bot=NAME`` (the process: a bot's name or ``fleet-<host>``),
``level=warning`` (that level and above), ``job=ID`` (a job id prefix), and any
other word must appear somewhere in the line. The tail follows new lines unless
the cursor was moved off the newest one.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Label

from corral.core.logship import LogLine
from corral.tui.screens.base import TaskScreen
from corral.tui.widgets.fit import Col
from corral.tui.widgets.synced_table import SyncedTable

COLUMNS = [Col("ts", "time", 0), Col("process", "process", 0), Col("level", "level", 0), Col("event", "event", 0),
           Col("fields", "fields", 1, flex=True, max=400), Col("host", "host", 3)]
LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}
LEVEL_STYLE = {"warning": "yellow", "error": "bold red"}
SHOWN = 500  #: newest matching lines shown
_CORE = ("ts", "level", "logger", "event")


def matches(line: LogLine, needle: str) -> bool:
    rec = line.record
    for word in needle.split():
        key, _, value = word.partition("=")
        if key == "bot" and value:
            if line.process != value:
                return False
        elif key == "level" and value:
            if LEVELS.get(line.level, 1) < LEVELS.get(value.lower(), 1):
                return False
        elif key == "job" and value:
            if not str(rec.get("job", "")).startswith(value):
                return False
        elif word.lower() not in f"{line.process} {rec}".lower():
            return False
    return True


def line_cells(line: LogLine) -> tuple:
    rec = line.record
    fields = " ".join(f"{k}={v}" for k, v in rec.items() if k not in _CORE)
    return (str(rec.get("ts", ""))[11:23], line.process, Text(line.level, style=LEVEL_STYLE.get(line.level, "")),
            str(rec.get("event", "")), fields, line.subject.split(".")[2] if line.subject.count(".") >= 3 else "")


class LogsScreen(TaskScreen):
    TITLE_TEXT = "logs"
    BINDINGS = [Binding("slash", "focus_filter", "Filter", key_display="/"),
                Binding("escape", "leave_filter", "Leave filter", show=False)]

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter: bot=NAME level=warning job=ID words…", id="logs-filter")
        yield Label("", id="logs-count", classes="section")
        yield SyncedTable(COLUMNS, id="logs-table", filterable=False)  # its own filter box (bot=, level=, job=) takes `/`

    def on_mount(self) -> None:
        self._shown = (-1, "")
        super().on_mount()
        self.query_one("#logs-table").focus()

    def matching(self) -> list[tuple[int, LogLine]]:
        needle = self.query_one("#logs-filter", Input).value.strip()
        return [(n, line) for n, line in self.store.logs if matches(line, needle)][-SHOWN:]

    def redraw(self) -> None:
        needle = self.query_one("#logs-filter", Input).value.strip()
        if self._shown == (self.store.logs_seen, needle):
            return
        self._shown = (self.store.logs_seen, needle)
        table = self.query_one("#logs-table", SyncedTable)
        following = table.row_count == 0 or table.cursor_row >= table.row_count - 1
        lines = self.matching()
        table.sync((str(n), line_cells(line)) for n, line in lines)
        if following and table.row_count:
            table.move_cursor(row=table.row_count - 1)
        total = len(self.store.logs)
        self.query_one("#logs-count", Label).update(f"{total} line(s)" + (f", {len(lines)} match" if needle else "")
                                                    + ("" if self.store.logs_error == "" else f"  ·  {self.store.logs_error}"))

    @on(Input.Changed, "#logs-filter")
    def _refilter(self) -> None:
        self.redraw()

    @on(Input.Submitted, "#logs-filter")
    def action_leave_filter(self) -> None:
        self.query_one("#logs-table").focus()

    def action_focus_filter(self) -> None:
        self.query_one("#logs-filter").focus()
