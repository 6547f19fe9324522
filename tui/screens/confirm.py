"""A yes/no question before anything destructive or bulk (drain, replay, purge, pause, cancel).

The question wraps inside the box (it is never cut), and a question may offer a
third, safer answer (``alt``), such as scaling a fleet host down instead of
draining a bot its supervisor would replace.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

ALT = "alt"  #: what the dialog dismisses with when the third answer is chosen


class ConfirmScreen(ModalScreen[bool | str]):
    """Dismisses with True on "yes" (``y``/Enter on Yes), False on "no" (``n``/Escape), and
    :data:`ALT` on the alternative (``a``) when one is offered."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
        Binding("a", "alternative", "Alternative", show=False),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "Cancel", alt: str | None = None) -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.no = no  #: "Cancel" would read as the action itself when that action is cancelling a job
        self.alt = alt

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="modal-box"):
            yield Static(self.question, id="confirm-question", markup=False)
            with Horizontal(classes="modal-buttons"):
                if self.alt:
                    yield Button(f"{self.alt} (a)", variant="primary", id="alt")
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button(f"{self.no} (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(ALT if event.button.id == "alt" else event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def action_alternative(self) -> None:
        if self.alt:
            self.dismiss(ALT)

    def text(self) -> str:
        """The question and the answers offered, as the operator reads them (tests use this)."""
        return "  ".join([self.question, *(str(b.label) for b in self.query(Button))])
