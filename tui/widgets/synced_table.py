"""A DataTable that is updated in place from a keyed list of rows, and fits its width.

Clearing and refilling a table every tick would reset the cursor the operator
is using to pick a bot or a dead letter; syncing by row key keeps it. The table
keeps every row's full values and shows what fits (:func:`corral.tui.widgets.fit.fit`):
when the terminal or the content changes which columns show, it rebuilds its
columns once and puts the cursor back on the same row.

The operator shapes every table the same way (:mod:`corral.tui.widgets.table_shape`):
``/`` filters its rows, ``o`` cycles the sort column, ``O`` flips the direction;
the border says how it is shaped. A ``sync`` keeps the shape and the cursor's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from corral.tui.widgets.fit import Col, Layout, as_cols, cut, fit
from corral.tui.widgets.table_shape import DOWN, UP, Shape, matches, next_column, sort_key, title

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


class SyncedTable(DataTable):
    """``sync(rows)`` adds, updates and removes rows by key; ``columns`` are :class:`Col` or (key, label) pairs.

    With ``sort_column`` the rows start sorted by that column (give it priority 0); the operator may pick
    another. ``value(key, column)`` is a cell's whole text, shown or not. ``filterable=False`` leaves
    ``/`` to the screen (one whose own filter box also drives its bulk actions).
    """

    DEFAULT_CSS = """
    SyncedTable { height: 1fr; }
    SyncedTable.-shaped { border-top: solid $accent; border-title-color: $accent; }
    """
    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/", show=False),
        Binding("o", "sort_next", "Sort by next column", show=False),
        Binding("O", "sort_flip", "Flip sort direction", show=False),
    ]

    def __init__(self, columns: Sequence[Col | tuple[str, str]], *, id: str | None = None, sort_column: str | None = None,
                 reverse: bool = False, filterable: bool = True) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._cols = as_cols(columns)
        self.shape = Shape(column=sort_column, reverse=reverse)
        self._initial = (sort_column, reverse)
        self._default_sort = sort_column is not None  #: the table's own order: not announced in the border
        self.filterable = filterable
        self._full: dict[str, list[Cell]] = {}  #: every row, filtered or not
        self._rows: dict[str, list[Cell]] = {}  #: the rows the filter lets through, as the table holds them
        self._layout: Layout = ()

    def on_mount(self) -> None:
        self._relayout()

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    # -- the model -------------------------------------------------------------------------

    def sync(self, rows: Iterable[Row]) -> None:
        self._full = {key: list(cells) for key, cells in rows}
        self._apply()

    def set_filter(self, needle: str) -> None:
        """Show only the rows holding every word of ``needle`` (the cursor stays on its row if it passes)."""
        self.shape.needle = needle.strip()
        self._apply()

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        """Order the rows by ``column``'s whole values (None: the order they were synced in)."""
        self.shape.column, self.shape.reverse = column, reverse
        self._default_sort = False
        self._layout = ()  # the header's arrow moves: rebuild the columns
        self._relayout()
        self._show_shape()

    def _apply(self) -> None:
        words = self.shape.words()
        fresh = {k: cells for k, cells in self._full.items() if matches(cells, words)}
        old, self._rows = self._rows, fresh
        if not self._relayout():
            self._update_rows(old, fresh)
        self._show_shape()

    def _update_rows(self, old: dict[str, list[Cell]], fresh: dict[str, list[Cell]]) -> None:
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
                    changed = changed or col == self.shape.column
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
        for cells in self._full.values():  # all rows, so typing a filter does not reflow the columns
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
        if len(self._rows) + 1 > self.content_region.height:
            width -= self.styles.scrollbar_size_vertical
        return width

    def _relayout(self) -> bool:
        """Rebuild the columns if what fits changed; True if it did (the rows are then all new)."""
        cols = [replace(c, label=self._label(c)) for c in self._cols]
        layout = fit(cols, self._content_widths(), self._available())
        if layout == self._layout and self.columns:
            return False
        selected = self.selected_key()
        self._layout = layout
        self.clear(columns=True)
        labels = {c.key: c.label for c in cols}
        for key, width in layout:
            self.add_column(labels[key], key=key, width=width)
        for key, cells in self._rows.items():
            self.add_row(*self._shown(cells), key=key)
        self._sort(selected)
        return True

    def _label(self, col: Col) -> str:
        if col.key != self.shape.column or self._default_sort:
            return col.label
        return f"{col.label} {DOWN if self.shape.reverse else UP}"

    def _sort(self, selected: str | None = None) -> None:
        """Order the rows by the sort column's whole values, keeping the cursor on its row."""
        column = self.shape.column
        if column is None or not self._rows:
            return
        selected = selected if selected is not None else self.selected_key()
        index = next((i for i, c in enumerate(self._cols) if c.key == column), None)
        if index is None:
            return
        order = sorted(self._rows, key=lambda k: sort_key(self._rows[k][index]), reverse=self.shape.reverse)
        if [r.key.value for r in self.ordered_rows] != order:
            # Re-added rather than DataTable.sort: that sorts by the cut cells, and "12" before "9".
            self.clear()
            for key in order:
                self.add_row(*self._shown(self._rows[key]), key=key)
        if selected is not None and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def _show_shape(self) -> None:
        shape = self.shape if not self._default_sort else Shape(needle=self.shape.needle)
        text = title(shape, {c.key: c.label for c in self._cols}, len(self._rows), len(self._full))
        self.border_title = text or None
        self.set_class(bool(text), "-shaped")

    # -- the operator's keys ---------------------------------------------------------------

    def action_filter(self) -> None:
        if not self.filterable or self.parent is None:
            raise SkipAction()  # the key goes on to the screen's own filter box
        from corral.tui.widgets.table_filter import TableFilter  # the box imports this module

        box = next((b for b in self.parent.query_children(TableFilter) if b.table is self), None)
        if box is None:
            box = TableFilter(self)
            assert isinstance(self.parent, Widget), "a table is always mounted in a widget"
            self.parent.mount(box, before=self)
        box.focus()

    def action_sort_next(self) -> None:
        current = None if self._default_sort else self.shape.column
        column = next_column(self.shown_columns(), current)
        if column is None and self._initial[0] is not None:  # past the last column: back to the table's own order
            self.sort_by(*self._initial)
            self._default_sort = True
            self._layout = ()
            self._relayout()
            self._show_shape()
            return
        self.sort_by(column, self.shape.reverse if current else False)

    def action_sort_flip(self) -> None:
        column = self.shape.column or next(iter(self.shown_columns()), None)
        self.sort_by(column, not self.shape.reverse)
