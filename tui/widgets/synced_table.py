"""A DataTable that is updated in place from a keyed list of rows.

Clearing and refilling a table every tick would reset the cursor the operator
is using to pick a bot or a dead letter; syncing by row key keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


class SyncedTable(DataTable):
    """``sync(rows)`` adds, updates and removes rows by key; ``columns`` are (key, label) pairs.

    With ``sort_column`` the rows are kept sorted by that column's text.
    """

    DEFAULT_CSS = """
    SyncedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[tuple[str, str]], *, id: str | None = None, sort_column: str | None = None,
                 reverse: bool = False) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._columns = columns
        self._sort_column = sort_column
        self._reverse = reverse

    def on_mount(self) -> None:
        for key, label in self._columns:
            self.add_column(label, key=key)

    def sync(self, rows: Iterable[Row]) -> None:
        rows = list(rows)
        wanted = {key for key, _ in rows}
        for row_key in [k for k in self.rows if k.value not in wanted]:
            self.remove_row(row_key)
        changed = False
        for key, cells in rows:
            if key in self.rows:
                for (col, _), cell in zip(self._columns, cells, strict=True):
                    old = self.get_cell(key, col)
                    if str(old) != str(cell) or type(old) is not type(cell):
                        self.update_cell(key, col, cell, update_width=True)
                        changed = changed or col == self._sort_column
            else:
                self.add_row(*cells, key=key)
                changed = True
        if changed and self._sort_column:
            self.sort(self._sort_column, key=str, reverse=self._reverse)

    def selected_key(self) -> str | None:
        """The row key under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None

    def row_text(self, key: str) -> list[str]:
        """The row's cells as plain text (what the operator reads)."""
        return [str(c) for c in self.get_row(key)]
