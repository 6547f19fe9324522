"""Fitting table columns to a width: the important columns stay, the flexible one shrinks first."""

from __future__ import annotations

from rich.text import Text

from corral.tui.widgets.fit import Col, cut, fit

COLS = [Col("job", "job", 0), Col("error", "error", 0, flex=True, max=400), Col("kind", "kind", 1),
        Col("queue", "queue", 3), Col("seq", "#", 4), Col("full", "full", detail_only=True)]


def test_everything_shows_when_there_is_room():
    """Given a wide table, when fitted, then every column but the detail-only one shows at its content width."""
    assert fit(COLS, {"job": 8, "error": 20, "kind": 4, "queue": 7, "seq": 2}, 200) == (
        ("job", 8), ("error", 20), ("kind", 4), ("queue", 7), ("seq", 2))


def test_the_flexible_column_shrinks_before_any_column_is_dropped():
    """Given a long error, when the width is short, then the error shrinks and the other columns stay."""
    layout = dict(fit(COLS, {"job": 8, "error": 300, "kind": 4, "queue": 7, "seq": 2}, 60))
    assert set(layout) == {"job", "error", "kind", "queue", "seq"}
    assert sum(w + 2 for w in layout.values()) == 60


def test_the_least_important_columns_drop_first_and_priority_zero_never_does():
    """Given too little room, when fitted, then # then queue drop, and job and error stay even when they overflow."""
    assert [k for k, _ in fit(COLS, {"job": 8, "error": 300, "kind": 4, "queue": 7, "seq": 2}, 34)] == ["job", "error", "kind"]
    assert [k for k, _ in fit(COLS, {"job": 8, "error": 300}, 5)] == ["job", "error"]


def test_cut_keeps_styles_and_marks_the_cut():
    """Given a styled long cell, when cut, then it ends with an ellipsis at the width and keeps its style."""
    out = cut(Text("failed badly", style="red"), 6)
    assert out.plain == "faile…" and out.style == "red"
    assert cut("short", 10) == "short"
