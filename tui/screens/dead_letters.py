"""Dead letters: why jobs died; replay or purge one, or every one matching a filter."""

from __future__ import annotations

import datetime as dt

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Label, ProgressBar

from corral.core.dlq import DeadLetter
from corral.tui.screens.base import TaskScreen
from corral.tui.widgets.synced_table import SyncedTable

COLUMNS = [("seq", "#"), ("job", "job"), ("kind", "kind"), ("queue", "queue"), ("attempts", "attempts"),
           ("dead_at", "died"), ("reason", "reason")]


def matches(d: DeadLetter, needle: str) -> bool:
    hay = f"{d.job_id} {d.kind} {d.queue} {d.reason} {d.bots}".lower()
    return all(word in hay for word in needle.lower().split())


def letter_cells(d: DeadLetter) -> tuple:
    died = dt.datetime.fromtimestamp(d.dead_at).strftime("%m-%d %H:%M:%S") if d.dead_at else "-"
    return (str(d.seq), d.job_id, d.kind, d.queue, str(d.attempts), died, d.reason[:200])


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
        yield SyncedTable(COLUMNS, id="dlq-table")
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

    @on(Input.Changed, "#dlq-filter")
    def _refilter(self) -> None:
        self.redraw()

    def _selected(self) -> list[DeadLetter]:
        key = self.query_one("#dlq-table", SyncedTable).selected_key()
        chosen = [d for d in self.store.dead if str(d.seq) == key]
        if not chosen:
            self.notify("no dead letter selected", severity="warning")
        return chosen

    def _bulk(self, verb: str, letters: list[DeadLetter]) -> None:
        if not letters:
            self.notify("no dead letters match", severity="warning")
            return
        run = self.corral.replay_dead if verb == "Replay" else self.corral.purge_dead
        what = "back onto the jobs stream" if verb == "Replay" else "for good"
        self.corral.confirm_then(f"{verb} {len(letters)} dead letter(s) {what}?", lambda: run(letters), yes=f"{verb} {len(letters)}")

    def action_replay(self) -> None:
        if letters := self._selected():
            self._bulk("Replay", letters)

    def action_replay_matching(self) -> None:
        self._bulk("Replay", self.matching())

    def action_purge(self) -> None:
        if letters := self._selected():
            self._bulk("Purge", letters)

    def action_purge_matching(self) -> None:
        self._bulk("Purge", self.matching())

    def action_focus_filter(self) -> None:
        self.query_one("#dlq-filter").focus()

    def progress(self, done: int, total: int) -> None:
        """Called by the app while a replay or purge runs (``done == total`` hides the bar)."""
        bar = self.query_one("#dlq-progress", ProgressBar)
        bar.display = done < total
        bar.update(total=total, progress=done)
