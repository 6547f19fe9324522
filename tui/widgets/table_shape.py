"""How a table is narrowed and ordered by the operator: a filter and a sort column, k9s style.

The shape belongs to the table, not to its data: the screens redraw from the
store every half second, and a redraw must neither forget the operator's
filter nor undo the order they picked. :class:`corral.tui.widgets.synced_table.SyncedTable`
holds one :class:`Shape` and applies it to every ``sync``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

UP, DOWN = "▲", "▼"
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


@dataclass
class Shape:
    """The operator's filter text and sort column (None: the table's own order)."""

    needle: str = ""
    column: str | None = None
    reverse: bool = False

    def words(self) -> list[str]:
        return self.needle.lower().split()


def matches(cells: Sequence[str | Text], words: list[str]) -> bool:
    """Every word appears somewhere in the row (case-insensitive), hidden columns included."""
    if not words:
        return True
    hay = " ".join(str(c) for c in cells).lower()
    return all(w in hay for w in words)


def sort_key(cell: str | Text) -> tuple:
    """Numbers by value (``12`` after ``9``, ``3.5s ago`` as 3.5), then text, case-insensitive.

    ``-`` and empty cells go last whatever the direction would suggest for text: they mean "none".
    """
    text = str(cell)
    if m := _NUMBER.match(text):
        return (0, float(m.group(1)), text.lower())
    if text.strip() in ("", "-", "∅"):
        return (2, 0.0, "")
    return (1, 0.0, text.lower())


def next_column(shown: Sequence[str], current: str | None) -> str | None:
    """The sort column after ``current`` among the shown ones, wrapping to none (the table's own order)."""
    if not shown:
        return None
    if current is None or current not in shown:
        return shown[0]
    i = list(shown).index(current) + 1
    return shown[i] if i < len(shown) else None


def title(shape: Shape, labels: dict[str, str], shown: int, total: int) -> str:
    """``sort kind ▲ · filter "resize" 3/10``, or "" when the table is in its own order, unfiltered."""
    parts = []
    if shape.column is not None:
        parts.append(f"sort {labels.get(shape.column, shape.column)} {DOWN if shape.reverse else UP}")
    if shape.needle:
        parts.append(f'filter "{shape.needle}" {shown}/{total}')
    return " · ".join(parts)
