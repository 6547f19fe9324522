"""The describe screen: one thing in full (``Enter`` on a row), scrollable, Esc to go back.

It is pushed over the task screen, so the table underneath keeps its cursor,
filter and sort. What needs a read (a job's record) is loaded in a worker and
drawn when it lands; ``j`` describes the job a dead letter or event is about,
``w`` draws the workflow (chain, saga, group) that job belongs to.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from rich.console import Console, RenderableType
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from corral.core import jobrecord
from corral.tui.describe import describe_job

if TYPE_CHECKING:
    from corral.tui.app import CorralApp

PENDING_SCAN = 5000  #: pending jobs scanned (direct gets) to find a waiting job's payload
Loader = Callable[[], Awaitable[RenderableType]]


class DescribeScreen(Screen):
    DEFAULT_CSS = """
    DescribeScreen #describe-scroll { height: 1fr; border: round $primary; padding: 0 1; }
    DescribeScreen #describe-body { width: 100%; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("j", "job", "Job"),
        Binding("w", "workflow", "Workflow"),
    ]

    def __init__(self, title: str, body: RenderableType, *, job_id: str | None = None, load: Loader | None = None,
                 is_job: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.job_id = job_id
        self.is_job = is_job
        self._load = load

    @property
    def corral(self) -> CorralApp:
        return cast("CorralApp", self.app)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="describe-scroll"):
            yield Static(self.body, id="describe-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#describe-scroll").border_title = self.title_text
        self.query_one("#describe-scroll").focus()
        if self._load is not None:
            self._run_load(self._load)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "job":
            return self.job_id is not None and not self.is_job
        if action == "workflow":
            return self.job_id is not None
        return True

    @work(exclusive=True, group="describe", exit_on_error=False)
    async def _run_load(self, load: Loader) -> None:
        self.show(await load())

    def show(self, body: RenderableType) -> None:
        self.body = body
        self.query_one("#describe-body", Static).update(body)

    def action_job(self) -> None:
        if self.job_id is not None:
            self.app.push_screen(job_screen(self.corral, self.job_id))

    def action_workflow(self) -> None:
        if self.job_id is not None:
            from corral.tui.screens.workflow import WorkflowScreen  # the workflow screen opens describes too

            self.app.push_screen(WorkflowScreen(self.job_id))

    def text(self) -> str:
        """What the screen shows, as plain text wrapped at its width (tests use this)."""
        width = max(self.query_one("#describe-scroll").scrollable_content_region.width, 20)
        console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
        console.print(self.body)
        return console.export_text()


def job_screen(app: CorralApp, job_id: str) -> DescribeScreen:
    """A job's describe screen: its timeline of deliveries and events, and its result, read now."""
    async def load() -> RenderableType:
        return describe_job(await jobrecord.read_record(app._connected_js(), job_id, PENDING_SCAN))
    return DescribeScreen(f"job {job_id}", "reading the job's record…", job_id=job_id, load=load, is_job=True)
