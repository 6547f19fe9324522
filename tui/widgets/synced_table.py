"""A DataTable that is updated in place from a keyed list of rows, and fits its width.

Clearing and refilling a table every tick would reset the cursor the operator
is using to pick a bot or a dead letter; syncing by row key keeps it. The table
keeps every row's full values and shows what fits (:func:`corral.tui.widgets.fit.fit`):
when the terminal or the content changes which columns show, it rebuilds its
columns once and puts the cursor back on the same row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from corral.tui.widgets.fit import Col, Layout, as_cols, cut, fit

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


class SyncedTable(DataTable):
    """``sync(rows)`` adds, updates and removes rows by key; ``columns`` are :class:`Col` or (key, label) pairs.

    With ``sort_column`` the rows are kept sorted by that column's text (give it priority 0).
    ``value(key, column)`` is a cell's whole text, shown or not.
    """

    DEFAULT_CSS = """
    SyncedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[Col | tuple[str, str]], *, id: str | None = None, sort_column: str | None = None,
                 reverse: bool = False) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._cols = as_cols(columns)
        self._sort_column = sort_column
        self._reverse = reverse
        self._full: dict[str, list[Cell]] = {}
        self._layout: Layout = ()

    def on_mount(self) -> None:
        self._relayout()

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    # -- the model -------------------------------------------------------------------------

    def sync(self, rows: Iterable[Row]) -> None:
        fresh = {key: list(cells) for key, cells in rows}
        old, self._full = self._full, fresh
        if self._relayout():
            return
        for key in [k for k in old if k not in fresh]:
            self.remove_row(key)
        changed = False
        for key, cells in fresh.items():
            if key not in old:
                self.add_row(*self._shown(cells), key=key)
                changed = True
                continue
            for (col, width), i in zip(self._layout, self._indexes(), strict=True):
                new = cells[i]
                before = old[key][i]
                if str(before) != str(new) or type(before) is not type(new):
                    self.update_cell(key, col, cut(new, width))
                    changed = changed or col == self._sort_column
        if changed:
            self._sort()

    def value(self, key: str, column: str) -> str:
        """The whole text of one cell (also of a column not shown).

        Raises:
            KeyError: no such row or column.
        """
        index = next(i for i, c in enumerate(self._cols) if c.key == column)
        return str(self._full[key][index])

    def row_values(self, key: str) -> list[tuple[str, Cell]]:
        """(column label, whole cell) for every column of a row, shown or not."""
        # not strict: an unknown row has no cells, and a caller's row may be shorter than the columns
        return [(c.label, cell) for c, cell in zip(self._cols, self._full.get(key, []), strict=False)]

    def row_text(self, key: str) -> list[str]:
        """The row's cells as whole text."""
        return [str(c) for c in self._full.get(key, [])]

    def shown_columns(self) -> list[str]:
        """Keys of the columns that fit and are shown, left to right."""
        return [key for key, _ in self._layout]

    def selected_key(self) -> str | None:
        """The row key under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None

    # -- fitting ---------------------------------------------------------------------------

    def _indexes(self) -> list[int]:
        where = {c.key: i for i, c in enumerate(self._cols)}
        return [where[key] for key, _ in self._layout]

    def _shown(self, cells: Sequence[Cell]) -> list[Cell]:
        return [cut(cells[i], width) for (_, width), i in zip(self._layout, self._indexes(), strict=True)]

    def _content_widths(self) -> dict[str, int]:
        widths = {c.key: 0 for c in self._cols}
        for cells in self._full.values():
            for c, cell in zip(self._cols, cells, strict=False):  # a caller's row may be shorter than the columns
                n = cell.cell_len if isinstance(cell, Text) else cell_len(cell)
                if n > widths[c.key]:
                    widths[c.key] = n
        return widths

    def _available(self) -> int:
        """Cells across for the columns: the vertical scrollbar's room is kept once rows overflow, so
        that its appearing never pushes the last column off (and back, and off)."""
        width = self.content_region.width
        if width <= 0:
            return 10_000  # not laid out yet: show everything, the first resize fits it
        if len(self._full) + 1 > self.content_region.height:
            width -= self.styles.scrollbar_size_vertical
        return width

    def _relayout(self) -> bool:
        """Rebuild the columns if what fits changed; True if it did (the rows are then all new)."""
        layout = fit(self._cols, self._content_widths(), self._available())
        if layout == self._layout and self.columns:
            return False
        selected = self.selected_key()
        self._layout = layout
        self.clear(columns=True)
        labels = {c.key: c.label for c in self._cols}
        for key, width in layout:
            self.add_column(labels[key], key=key, width=width)
        for key, cells in self._full.items():
            self.add_row(*self._shown(cells), key=key)
        self._sort()
        if selected is not None and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)
        return True

    def _sort(self) -> None:
        if self._sort_column and self._sort_column in self.shown_columns():
            self.sort(self._sort_column, key=str, reverse=self._reverse)
