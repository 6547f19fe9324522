"""Fitting a table's columns to the terminal: which columns show, and how wide.

A table on an 80-column terminal cannot show everything a 160-column one can.
Rather than let the right-hand columns fall off-screen (and with them the one
that says *why*: the reason, the state, the bot), every column says how much it
matters (``priority``, 0 = always shown) and whether it may shrink (``min``) or
take the room left over (``flex``). :func:`fit` then drops the least important
columns first and cuts long cells with "…"; the whole value stays available to
a detail pane (:class:`corral.tui.widgets.detail_pane.DetailPane`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text

PAD = 2  #: DataTable's cell padding: one blank column each side of a cell
FLEX_MIN = 12  #: narrowest a flexible column is shrunk to unless it says otherwise


@dataclass(frozen=True)
class Col:
    """One column: its key (used by ``get_cell`` and tests), its header, and how it yields room."""

    key: str
    label: str
    priority: int = 1  #: 0: never dropped; among the rest the highest number is dropped first
    min: int | None = None  #: narrowest it may be cut to (None: never cut below its content)
    max: int = 48  #: widest it grows to; longer text is cut with "…"
    flex: bool = False  #: takes the room the others leave (a reason, a detail, a progress message)
    detail_only: bool = False  #: never a table column: read in the detail pane (a full id, a whole reason)

    def natural(self, content: int) -> int:
        """The width it would like: its content, at least its header, at most ``max``."""
        return max(cell_len(self.label), min(content, self.max))

    def floor(self, natural: int) -> int:
        """The width it may be shrunk to."""
        least = FLEX_MIN if self.flex and self.min is None else self.min
        return natural if least is None else min(natural, max(least, 1))


def as_cols(columns: Sequence[Col | tuple[str, str]]) -> list[Col]:
    """Accept plain ``(key, label)`` pairs too: the first column is kept, the rest drop right to left."""
    return [c if isinstance(c, Col) else Col(c[0], c[1], priority=0 if i == 0 else i) for i, c in enumerate(columns)]


Layout = tuple[tuple[str, int], ...]  #: (column key, width) of the columns shown, in order


def fit(cols: Sequence[Col], content: Mapping[str, int], width: int) -> Layout:
    """The columns to show and their widths, so the table is at most ``width`` cells wide.

    Shrink flexible columns first, then any column with a ``min``; only when that is
    not enough drop the least important column (rightmost among equals) and try again.
    The columns with priority 0 stay even when they overflow.
    """
    shown = [c for c in cols if not c.detail_only]
    while True:
        widths = {c.key: c.natural(content.get(c.key, 0)) for c in shown}
        excess = sum(w + PAD for w in widths.values()) - width
        for c in sorted(shown, key=lambda c: (not c.flex, -c.priority)):
            if excess <= 0:
                break
            give = min(widths[c.key] - c.floor(widths[c.key]), excess)
            if give > 0:
                widths[c.key] -= give
                excess -= give
        droppable = [c for c in shown if c.priority > 0]
        if excess <= 0 or not droppable:
            return tuple((c.key, widths[c.key]) for c in shown)
        shown.remove(max(reversed(droppable), key=lambda c: c.priority))


def cut(cell: str | Text, width: int) -> str | Text:
    """``cell`` cut to ``width`` cells with "…" when longer (styles kept)."""
    if isinstance(cell, Text):
        if cell.cell_len <= width:
            return cell
        out = cell.copy()
        out.truncate(width, overflow="ellipsis")
        return out
    if cell_len(cell) <= width:
        return cell
    out = Text(cell)
    out.truncate(width, overflow="ellipsis")
    return out.plain


def short_id(job_id: str, n: int = 8) -> str:
    """The first ``n`` characters of a job id: random hex, so as unique at a glance as a git hash."""
    return job_id[:n]
