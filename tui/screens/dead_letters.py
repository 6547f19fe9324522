"""Dead letters: why jobs died; replay or purge one, or every one matching a filter.

A bulk action previews its count and a sample and acts on exactly the letters
previewed (:mod:`corral.core.bulk`): editing the filter or a new dead letter
arriving while the confirmation is open changes nothing about it.
"""

from __future__ import annotations

import datetime as dt
import re

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Label, ProgressBar

from corral.core import jobrecord
from corral.core.bulk import freeze_dead
from corral.core.dlq import DeadLetter
from corral.tui.describe import describe_dead
from corral.tui.screens.describe import PENDING_SCAN, DescribeScreen
from corral.tui.screens.base import TaskScreen
from corral.tui.widgets.detail_pane import DetailPane
from corral.tui.widgets.fit import Col, short_id
from corral.tui.widgets.synced_table import SyncedTable

#: The job and its error first: the error takes the room left and is read whole in the detail pane.
COLUMNS = [Col("job", "job", 0), Col("error", "error", 0, flex=True, max=400), Col("kind", "kind", 1, min=6),
           Col("attempts", "tries", 2), Col("dead_at", "died", 2), Col("queue", "queue", 3), Col("seq", "#", 4),
           Col("reason", "reason", detail_only=True), Col("full_id", "job id", detail_only=True),
           Col("bots", "bots", detail_only=True)]
#: How the executor words a reason (``bots/execute.py``): the count is in its own column, so the table shows the error.
_RETRIED = re.compile(r"failed \d+ attempt\(s\); last error: ")


def matches(d: DeadLetter, needle: str) -> bool:
    hay = f"{d.job_id} {d.kind} {d.queue} {d.reason} {d.bots}".lower()
    return all(word in hay for word in needle.lower().split())


def letter_cells(d: DeadLetter) -> tuple:
    died = dt.datetime.fromtimestamp(d.dead_at).strftime("%m-%d %H:%M:%S") if d.dead_at else "-"
    return (short_id(d.job_id), error_of(d.reason), d.kind, str(d.attempts), died, d.queue, str(d.seq),
            d.reason, d.job_id, d.bots)


def error_of(reason: str) -> str:
    """The error a reason carries, without the attempts preamble the tries column already shows."""
    return _RETRIED.sub("", reason, count=1) or reason


class DeadLettersScreen(TaskScreen):
    TITLE_TEXT = "dead letters"
    BINDINGS = [
        Binding("r", "replay", "Replay"),
        Binding("R", "replay_matching", "Replay all matching"),
        Binding("p", "purge", "Purge"),
        Binding("P", "purge_matching", "Purge all matching"),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter: words that must all appear (reason, kind, queue, job id)", id="dlq-filter")
        yield Label("", id="dlq-count", classes="section")
        yield SyncedTable(COLUMNS, id="dlq-table", filterable=False)  # its filter box also picks what R and P act on
        yield DetailPane(long=("reason",), skip=("job", "error"), empty="no dead letter selected", id="dlq-detail")
        yield ProgressBar(id="dlq-progress", show_eta=False)

    def on_mount(self) -> None:
        self._shown = (-1, "")
        super().on_mount()
        self.query_one("#dlq-progress").display = False
        self.query_one("#dlq-table").focus()

    def matching(self) -> list[DeadLetter]:
        needle = self.query_one("#dlq-filter", Input).value.strip()
        return [d for d in self.store.dead if matches(d, needle)]

    def redraw(self) -> None:
        needle = self.query_one("#dlq-filter", Input).value.strip()
        if self._shown == (self.store.dead_version, needle):
            return
        self._shown = (self.store.dead_version, needle)
        letters = self.matching()
        self.query_one("#dlq-table", SyncedTable).sync((str(d.seq), letter_cells(d)) for d in letters)
        total = len(self.store.dead)
        self.query_one("#dlq-count", Label).update(
            f"{total} dead letters" + (f", {len(letters)} match the filter" if needle else "")
        )
        self._show_detail()

    @on(DataTable.RowHighlighted, "#dlq-table")
    def _show_detail(self) -> None:
        table = self.query_one("#dlq-table", SyncedTable)
        self.query_one("#dlq-detail", DetailPane).show_row(table, table.selected_key())

    @on(DataTable.RowSelected, "#dlq-table")
    def _describe(self, event: DataTable.RowSelected) -> None:
        """Enter: the dead letter in full, then the job's history once read."""
        letter = next((d for d in self.store.dead if str(d.seq) == event.row_key.value), None)
        if letter is None:
            return
        js = self.corral._connected_js

        async def load():
            return describe_dead(letter, await jobrecord.read_record(js(), letter.job_id, PENDING_SCAN))
        self.app.push_screen(DescribeScreen(f"dead letter #{letter.seq}", describe_dead(letter), job_id=letter.job_id, load=load))

    @on(Input.Changed, "#dlq-filter")
    def _refilter(self) -> None:
        self.redraw()

    @on(Input.Submitted, "#dlq-filter")
    def _filter_done(self) -> None:
        # Enter keeps the filter and hands the keys back to the table, so R and P act on what it shows.
        self.query_one("#dlq-table").focus()

    def _selected(self) -> list[DeadLetter]:
        key = self.query_one("#dlq-table", SyncedTable).selected_key()
        chosen = [d for d in self.store.dead if str(d.seq) == key]
        if not chosen:
            self.notify("no dead letter selected", severity="warning")
        return chosen

    def _bulk(self, action: str, letters: list[DeadLetter], filter_text: str) -> None:
        """Preview, then act on exactly the letters previewed (frozen: see :mod:`corral.core.bulk`)."""
        if not letters:
            self.notify("no dead letters match", severity="warning")
            return
        frozen = freeze_dead(action, letters, filter_text)
        self.corral.confirm_then(frozen.preview(), lambda: self.corral.bulk_dead(frozen),
                                 yes=f"{action.capitalize()} {frozen.count}")

    def _filter_text(self) -> str:
        needle = self.query_one("#dlq-filter", Input).value.strip()
        return repr(needle) if needle else ""

    def action_replay(self) -> None:
        if letters := self._selected():
            self._bulk("replay", letters, f"#{letters[0].seq}")

    def action_replay_matching(self) -> None:
        self._bulk("replay", self.matching(), self._filter_text())

    def action_purge(self) -> None:
        if letters := self._selected():
            self._bulk("purge", letters, f"#{letters[0].seq}")

    def action_purge_matching(self) -> None:
        self._bulk("purge", self.matching(), self._filter_text())

    def action_focus_filter(self) -> None:
        self.query_one("#dlq-filter").focus()

    def progress(self, done: int, total: int) -> None:
        """Called by the app while a replay or purge runs (``done == total`` hides the bar)."""
        bar = self.query_one("#dlq-progress", ProgressBar)
        bar.display = done < total
        bar.update(total=total, progress=done)
