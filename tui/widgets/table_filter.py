"""The ``/`` filter box of a table: typed text narrows the table as it is typed.

Enter keeps the filter and hands the keys back to the table (the table's border
still says what it is filtered by); Esc clears it and leaves. The box is mounted
just above its table when ``/`` is pressed and removed when it is left, so a
screen spends no row on it until the operator asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.binding import Binding
from textual.widgets import Input

if TYPE_CHECKING:
    from corral.tui.widgets.synced_table import SyncedTable


class TableFilter(Input):
    DEFAULT_CSS = """
    TableFilter { height: 3; }
    """
    BINDINGS = [Binding("escape", "clear", "Clear filter", show=False)]

    def __init__(self, table: SyncedTable) -> None:
        super().__init__(value=table.shape.needle, placeholder="filter: words that must all appear; Enter keeps, Esc clears",
                         classes="table-filter")
        self.table = table

    @on(Input.Changed)
    def _narrow(self, event: Input.Changed) -> None:
        event.stop()
        self.table.set_filter(event.value)

    @on(Input.Submitted)
    def _keep(self, event: Input.Submitted) -> None:
        event.stop()  # a screen's own Submitted handler (job search) is not about this box
        self._leave()

    def action_clear(self) -> None:
        self.table.set_filter("")
        self._leave()

    def _leave(self) -> None:
        self.table.focus()
        self.remove()
