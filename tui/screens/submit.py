"""The submit form: N jobs of one kind, queue and priority, pipelined with progress (``corral.core.submit.submit_many``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Select

from corral.core.errors import InvalidJobError
from corral.core.messages import Job, make_job
from corral.core.names import DEFAULT_PRIORITY, DEFAULT_QUEUE, PRIORITIES, check_token

MAX_COUNT = 100_000


@dataclass(frozen=True)
class SubmitRequest:
    kind: str
    args: dict[str, Any]
    queue: str
    count: int
    priority: str = DEFAULT_PRIORITY

    def jobs(self) -> list[Job]:
        return [make_job(self.kind, self.args, queue=self.queue, priority=self.priority) for _ in range(self.count)]


def parse_request(kind: str, args: str, queue: str, count: str, priority: str = DEFAULT_PRIORITY) -> SubmitRequest:
    """Validate the form's fields.

    Raises:
        InvalidJobError: a field is unusable (the message says which).
    """
    try:
        parsed = json.loads(args or "{}")
    except json.JSONDecodeError as e:
        raise InvalidJobError(f"args must be a JSON object: {e}") from e
    if not isinstance(parsed, dict):
        raise InvalidJobError("args must be a JSON object, like {\"a\": 1}")
    try:
        n = int(count)
    except ValueError as e:
        raise InvalidJobError(f"count {count!r} is not a whole number") from e
    if not 1 <= n <= MAX_COUNT:
        raise InvalidJobError(f"count must be 1-{MAX_COUNT}")
    if not kind.strip():
        raise InvalidJobError("kind is required")
    queue = check_token(queue.strip() or DEFAULT_QUEUE, "queue")
    make_job(kind.strip(), parsed, queue=queue, priority=priority)  # validates, the priority included
    return SubmitRequest(kind.strip(), parsed, queue, n, priority)


class SubmitScreen(ModalScreen[None]):
    """Submits through the app (``CorralApp.submit_jobs``) and shows its progress until done."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def compose(self) -> ComposeResult:
        # Labelled rows, two fields to a row, so that the whole form fits an 80x24 terminal.
        with Vertical(id="submit-box", classes="modal-box"):
            yield Label("Submit jobs (built-in kinds: sum, sleep, fail, echo)", classes="section")
            with Horizontal(classes="form-row"):
                yield Label("kind")
                yield Input("sum", id="submit-kind")
                yield Label("count")
                yield Input("1", id="submit-count", type="integer")
            with Horizontal(classes="form-row"):
                yield Label("args")
                yield Input('{"a": 1, "b": 2}', placeholder="a JSON object", id="submit-args")
            with Horizontal(classes="form-row"):
                yield Label("queue")
                yield Input(DEFAULT_QUEUE, id="submit-queue")
                yield Label("priority")
                yield Select([(p, p) for p in PRIORITIES], value=DEFAULT_PRIORITY, allow_blank=False, id="submit-priority")
            yield ProgressBar(id="submit-progress", show_eta=False)
            yield Label("", id="submit-status")
            with Horizontal(classes="modal-buttons"):
                yield Button("Submit (Enter)", variant="primary", id="submit-go")
                yield Button("Close (Esc)", id="submit-close")

    def on_mount(self) -> None:
        # No bar until something is submitted: an idle bar animates "--%" as if work were under way.
        self.query_one("#submit-progress").display = False
        self.query_one("#submit-kind").focus()

    def on_input_submitted(self) -> None:
        self.go()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit-go":
            self.go()
        else:
            self.dismiss()

    def action_close(self) -> None:
        self.dismiss()

    def go(self) -> None:
        value = lambda wid: self.query_one(wid, Input).value  # noqa: E731
        try:
            req = parse_request(value("#submit-kind"), value("#submit-args"), value("#submit-queue"), value("#submit-count"),
                                str(self.query_one("#submit-priority", Select).value))
        except InvalidJobError as e:
            self.status(str(e), error=True)
            return
        bar = self.query_one("#submit-progress", ProgressBar)
        bar.display = True
        bar.update(total=req.count, progress=0)
        self.status(f"submitting {req.count} {req.kind} job(s) to {req.queue}/{req.priority}…")
        self.app.submit_jobs(req, self)  # type: ignore[attr-defined]

    def progress(self, done: int, total: int) -> None:
        self.query_one("#submit-progress", ProgressBar).update(total=total, progress=done)

    def status(self, text: str, *, error: bool = False) -> None:
        label = self.query_one("#submit-status", Label)
        label.update(text)
        label.set_class(error, "error")
