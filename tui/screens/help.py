"""``?``: every key, for the app and for each screen, from the bindings themselves."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def bindings_table(title: str, bindings) -> Table:
    t = Table(title=title, title_justify="left", expand=True, show_header=False)
    t.add_column("key", style="bold cyan", no_wrap=True)
    t.add_column("action")
    for b in bindings:
        if isinstance(b, Binding) and b.description:
            t.add_row(b.key_display or b.key, b.description)
    return t


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, sections: list[tuple[str, list]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="modal-box"):
            yield Static("[b]corral dashboard[/b]: keys (Esc closes; Ctrl+P opens the command palette)")
            for title, bindings in self.sections:
                yield Static(bindings_table(title, bindings))

    def action_close(self) -> None:
        self.dismiss()
