"""Jobs: what is running (with its progress), what happened lately, and one job in full; cancel one."""

from __future__ import annotations


from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label

from corral.core import jobrecord
from corral.core.bulk import freeze_jobs
from corral.core.messages import CurrentJob
from corral.core.errors import InvalidJobError
from corral.core.names import check_token
from corral.core.messages import TERMINAL_EVENTS
from corral.ledger import search
from corral.ledger.errors import InvalidSearchError
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.search import SearchScreen
from corral.tui.screens.events import TYPE_STYLE, clock
from corral.core.jobrecord import JobRecord
from corral.tui.widgets.fit import Col, short_id
from corral.tui.widgets.job_inspector import JobInspector
from corral.tui.widgets.synced_table import SyncedTable

PENDING_SCAN = 5000  #: pending jobs scanned (direct gets, never the bots' consumer) to find a payload
#: The job and the bot running it stay; the progress message takes what room is left (cut with "…",
#: whole in the inspector). Ids are short (the row key, used to inspect and cancel, is the whole id).
INFLIGHT_COLUMNS = [Col("id", "job", 0), Col("bot", "bot", 0), Col("progress", "progress", 0, flex=True, min=8),
                    Col("kind", "kind", 1, min=6), Col("for", "running for", 2)]
#: Time, job and latest event first: what happened to which job; the rest drop as the width shrinks.
RECENT_COLUMNS = [Col("updated", "updated", 0), Col("id", "job", 0), Col("last", "last event", 0),
                  Col("kind", "kind", 1, min=6), Col("bot", "bot", 1, min=6), Col("attempt", "try", 2), Col("queue", "queue", 3)]


async def read_record(js, job_id: str) -> JobRecord:
    """The job's record, as `corral job` reads it (:mod:`corral.core.jobrecord`)."""
    return await jobrecord.read_record(js, job_id, PENDING_SCAN)


def progress_cell(job: CurrentJob) -> str:
    """``42% resizing`` (the handler's ``ctx.progress``, as the bot's heartbeat carries it), or ``-``."""
    if job.progress is None:
        return "-"
    return f"{job.progress:.0f}% {job.message or ''}".strip()


class JobsScreen(TaskScreen):
    TITLE_TEXT = "jobs"
    BINDINGS = [
        Binding("f", "search", "Find job"),
        Binding("escape", "leave_search", "Leave search", show=False),
        Binding("i", "inspect", "Inspect"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("w", "workflow", "Workflow", show=False),
        Binding("C", "cancel_matching", "Cancel all matching"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="job id, or a search: args.user=42 kind=resize state=failed bot=b1 since=10m", id="job-search")
        with Horizontal(id="jobs-body"):
            with Vertical(id="jobs-lists"):
                yield Label("in flight (from bot heartbeats)", classes="section")
                yield SyncedTable(INFLIGHT_COLUMNS, id="inflight-table")
                yield Label("recent jobs (latest event, newest first)", classes="section")
                yield SyncedTable(RECENT_COLUMNS, id="jobs-table", sort_column="updated", reverse=True)
            yield JobInspector(id="inspector")

    def on_mount(self) -> None:
        self._inspecting: str | None = None
        self._inspected_at = 0.0  #: ts of the inspected job's event last read
        super().on_mount()
        self.query_one("#jobs-table").focus()

    def redraw(self) -> None:
        now = self.store.clock()
        self.query_one("#inflight-table", SyncedTable).sync(
            (c.id, (short_id(c.id), bot, progress_cell(c), c.kind, f"{now - c.since:.1f}s"))
            for bot, c in self.store.in_flight()
        )
        self.query_one("#jobs-table", SyncedTable).sync(
            (j.job_id, (clock(j.ts), short_id(j.job_id), Text(j.last, style=TYPE_STYLE.get(j.last, "")), j.kind, j.bot,
                        str(j.attempt or ""), j.queue))
            for j in self.store.jobs.values()
        )
        # Follow the inspected job: read it again when a new event for it arrives.
        job = self.store.jobs.get(self._inspecting or "")
        if job is not None and job.ts > self._inspected_at:
            self._inspected_at = job.ts
            self.inspect(job.job_id)

    @on(Input.Submitted, "#job-search")
    def _search(self, event: Input.Submitted) -> None:
        job_id = event.value.strip()
        if "=" in job_id:  # key=value words: a payload search, answered by the ledger
            self._find(job_id)
            return
        try:
            check_token(job_id, "job id")
        except InvalidJobError as e:
            self.notify(str(e), severity="warning")
            return
        self.inspect(job_id)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.inspect(event.row_key.value)

    def _find(self, text: str) -> None:
        try:
            query = search.parse(text)
        except InvalidSearchError as e:
            self.notify(str(e), title=e.title, severity="error", timeout=8)
            return
        self.app.push_screen(SearchScreen(text, query))

    def action_search(self) -> None:
        self.query_one("#job-search").focus()

    def action_leave_search(self) -> None:
        """Esc in the search box hands the keys back to the tables (so ``4`` switches screens again)."""
        self.query_one("#jobs-table").focus()

    def action_inspect(self) -> None:
        table = self.focused if isinstance(self.focused, SyncedTable) else self.query_one("#jobs-table", SyncedTable)
        if (key := table.selected_key()) is not None:
            self.inspect(key)

    def _target(self) -> str | None:
        """The job under the cursor of the focused table, else the one in the inspector."""
        if isinstance(self.focused, SyncedTable) and (key := self.focused.selected_key()) is not None:
            return key
        return self._inspecting

    def action_cancel_job(self) -> None:
        job_id = self._target()
        if job_id is None:
            self.notify("select a job in a table (or inspect one) to cancel it", severity="warning")
            return
        known = self.store.jobs.get(job_id)
        if known is not None and known.last in TERMINAL_EVENTS:
            self.notify(f"job {job_id} already ended ({known.last}): nothing to cancel", severity="warning")
            return
        bot = next((bot for bot, c in self.store.in_flight() if c.id == job_id), None)
        where = f"running on {bot}: its handler is stopped" if bot else "not running: it is dropped when next delivered"
        self.corral.confirm_then(f"Cancel job {job_id}? It is {where}.", lambda: self._cancel(job_id), yes="Cancel job", no="Keep it")

    def action_workflow(self) -> None:
        """The chain, saga or group the selected (or inspected) job belongs to, as a tree."""
        from corral.tui.screens.workflow import WorkflowScreen

        if (job_id := self._target()) is not None:
            self.app.push_screen(WorkflowScreen(job_id))

    def open_jobs(self, needle: str) -> list[tuple[str, str]]:
        """(job id, description) of every running or not yet ended job whose id, kind, queue, bot or state has
        all the words of ``needle``: running ones from the bots' heartbeats, pending ones from the recent events."""
        out = {c.id: f"{c.kind} running on {bot}" for bot, c in self.store.in_flight()}
        for j in self.store.jobs.values():
            if j.last not in TERMINAL_EVENTS and j.job_id not in out:
                out[j.job_id] = f"{j.kind} {j.last} {j.queue} {j.bot}".strip()
        words = needle.lower().split()
        return [(job_id, what) for job_id, what in out.items() if all(w in f"{job_id} {what}".lower() for w in words)]

    def action_cancel_matching(self) -> None:
        """Cancel every open job matching the search box's words, after a preview; the set is frozen at the preview."""
        needle = self.query_one("#job-search", Input).value.strip()
        jobs = self.open_jobs(needle)
        if not jobs:
            self.notify("no running or pending job matches" + (f" {needle!r}" if needle else ""), severity="warning")
            return
        frozen = freeze_jobs(jobs, repr(needle) if needle else "")
        self.corral.confirm_then(frozen.preview(), lambda: self.corral.bulk_cancel(frozen),
                                 yes=f"Cancel {frozen.count} job(s)", no="Keep them")

    def _cancel(self, job_id: str) -> None:
        self.corral.cancel_job(job_id)
        self.inspect(job_id)  # the inspector follows the job, so the `cancelled` event shows when a bot acts

    @work(exclusive=True, group="inspect", exit_on_error=False)
    async def inspect(self, job_id: str) -> None:
        js = self.corral.js
        if js is None:
            self.notify("not connected to NATS yet", severity="warning")
            return
        self._inspecting = job_id
        self.query_one(JobInspector).show(await read_record(js, job_id))
