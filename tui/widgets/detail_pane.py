"""The detail pane: the row under the cursor in full, every column, wrapped.

A table cuts long values to fit the terminal (``fit.py``); this pane is where
they are read whole: a dead letter's reason, an event's detail, a bot's job.
Only the columns named in ``long`` take a line of their own; the rest share one.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.text import Text
from textual.widgets import Static

from corral.tui.widgets.synced_table import SyncedTable


class DetailPane(Static):
    DEFAULT_CSS = """
    DetailPane { height: auto; max-height: 8; padding: 0 1; border-top: solid $primary; overflow-y: auto; }
    """

    def __init__(self, *, long: Sequence[str] = (), skip: Sequence[str] = (), empty: str = "", id: str | None = None) -> None:
        super().__init__(empty, id=id)
        self.long = tuple(long)  #: column labels shown on a line of their own (the rest share one)
        self.skip = tuple(skip)  #: column labels not repeated here (a short id when the full one is shown)
        self.empty = empty
        self._shown: tuple = ()
        self._plain = empty

    def show_row(self, table: SyncedTable, key: str | None) -> None:
        """Show ``key``'s row from ``table`` (or the empty text when there is none)."""
        values = table.row_values(key) if key is not None else []
        state = (key, tuple(str(v) for _, v in values))
        if state == self._shown:
            return
        self._shown = state
        if not values:
            self._plain = self.empty
            self.update(self.empty)
            return
        short = [f"[b]{escape(label)}[/b] {escape(str(v))}" for label, v in values
                 if label not in self.long and label not in self.skip and str(v)]
        text = Text.from_markup("  ".join(short))
        for label, v in values:
            if label in self.long:
                text.append(f"\n{label}: ", style="bold")
                text.append(v if isinstance(v, Text) else str(v))
        self._plain = text.plain
        self.update(text)

    def text(self) -> str:
        """What the pane shows, as plain text (tests use this)."""
        return self._plain
