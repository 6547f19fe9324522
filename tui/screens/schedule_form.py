"""The add-schedule form: what `corral schedule add NAME KIND KEY=VALUE... --every|--cron|--at` takes.

The form only validates; the app writes the schedule (``CorralApp.add_schedule``),
so it is recorded like every operator action.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from corral.core.schedules import schedule_spec
from corral.core.submit import parse_kv
from corral.core.errors import ConfigError, CorralError, InvalidJobError
from corral.core.messages import Job, make_job
from corral.core.names import DEFAULT_QUEUE, check_token
from corral.core.schedules import check_spec

WHEN_HELP = "every 10m  |  cron 0 0 3 * * *  |  at 2026-11-23T18:00:00Z  |  @hourly"


@dataclass(frozen=True)
class ScheduleRequest:
    name: str
    job: Job
    spec: str  #: a ``Nats-Schedule`` spec the server accepts


def parse_when(text: str) -> str:
    """``every 10m`` / ``cron <6 fields>`` / ``at <RFC3339 UTC>`` (a leading ``--`` is fine, as on the
    command line), or a spec as `corral schedule list` shows it (``@every 10m``, ``@hourly``).

    Raises:
        InvalidJobError: not one of those forms.
    """
    flag, _, rest = text.strip().partition(" ")
    flag, rest = flag.lstrip("-").lower(), rest.strip().strip("'\"")
    if flag in ("every", "cron", "at") and rest:
        return check_spec(schedule_spec(**{flag: rest}))
    if not text.strip():
        raise InvalidJobError(f"when is required: {WHEN_HELP}")
    return check_spec(text)


def parse_schedule(name: str, kind: str, args: str, when: str, queue: str) -> ScheduleRequest:
    """Validate the form's fields.

    Raises:
        CorralError: a field is unusable (the message says which).
    """
    try:
        pairs = shlex.split(args)
    except ValueError as e:
        raise ConfigError(f"args: {e} (KEY=VALUE pairs separated by spaces; quote values with spaces)") from e
    if not kind.strip():
        raise ConfigError("kind is required")
    job = make_job(kind.strip(), parse_kv(pairs), queue=check_token(queue.strip() or DEFAULT_QUEUE, "queue"))
    return ScheduleRequest(check_token(name.strip(), "schedule name"), job, parse_when(when))


class AddScheduleScreen(ModalScreen[ScheduleRequest | None]):
    """Dismisses with a valid :class:`ScheduleRequest` (Enter), or None (Esc). Bad input is refused here."""

    BINDINGS = [Binding("escape", "close", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="schedule-box", classes="modal-box"):
            yield Label("Add a schedule (a second one with the same name replaces it)", classes="section")
            with Horizontal(classes="form-row"):
                yield Label("name")
                yield Input(placeholder="nightly-report", id="schedule-name")
                yield Label("kind")
                yield Input("sum", id="schedule-kind")
            with Horizontal(classes="form-row"):
                yield Label("args")
                yield Input("a=1 b=2", placeholder="KEY=VALUE ... (values are JSON when they parse)", id="schedule-args")
            with Horizontal(classes="form-row"):
                yield Label("when")
                yield Input("every 1m", placeholder=WHEN_HELP, id="schedule-when")
                yield Label("queue")
                yield Input(DEFAULT_QUEUE, id="schedule-queue")
            yield Label(f"when: {WHEN_HELP}", classes="hint")
            yield Label("", id="schedule-error", classes="error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Add (Enter)", variant="primary", id="schedule-ok")
                yield Button("Cancel (Esc)", id="schedule-cancel")

    def on_mount(self) -> None:
        self.query_one("#schedule-name").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "schedule-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        value = lambda wid: self.query_one(wid, Input).value  # noqa: E731
        try:
            req = parse_schedule(value("#schedule-name"), value("#schedule-kind"), value("#schedule-args"),
                                 value("#schedule-when"), value("#schedule-queue"))
        except CorralError as e:
            self.query_one("#schedule-error", Label).update(str(e))
            return
        self.dismiss(req)

    def action_close(self) -> None:
        self.dismiss(None)
