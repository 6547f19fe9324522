"""Analytics: read-only SQL over the ledger (``corral ledger``), typed or picked from the canned reports.

Every query goes through :func:`corral.ledger.client.ask` (the ``corral.ledger.query``
service over NATS); the dashboard never opens the DuckDB file, whose single
writer is the ledger process. Queries run in one exclusive worker group, so a
new query cancels the one still waiting. Refusals (bad SQL, a write statement,
no ledger running, not connected) are shown in the status line, in red, and
the last good result stays in the table.

When the result is a time series (first column a date or timestamp, at least
two rows, a numeric column), a sparkline charts the first numeric column
(``throughput``: jobs succeeded per minute).
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, OptionList, Sparkline, TextArea
from textual.widgets.option_list import Option

from corral.core.errors import CorralError
from corral.ledger.reports import REPORTS, Report
from corral.tui.screens.base import TaskScreen

MAX_ROWS = 500  #: rows asked of the ledger per query (the reply says when there were more)
QUERY_TIMEOUT = 15.0  #: seconds to wait for the ledger's answer
CELL_WIDTH = 60  #: longest cell text shown before it is cut with "…"
TIME_TYPES = ("TIMESTAMP", "DATE", "TIME")


def cell_text(value: Any) -> str:
    """One result value as the table shows it."""
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str)
    text = str(value)
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (isinstance(value, float) and math.isnan(value))


def time_series(columns: list[str], types: list[str], rows: list[list[Any]]) -> tuple[str, list[float]] | None:
    """(column name, values) to chart, or None when the result is not a time series.

    A time series: at least two rows, the first column a date/time type, and a column
    after it whose every value is a number (None counts as 0); the first such column is charted.
    """
    if len(rows) < 2 or not columns or not any(t in (types[0] if types else "").upper() for t in TIME_TYPES):
        return None
    for i in range(1, len(columns)):
        values = [r[i] for r in rows]
        if all(v is None or _is_number(v) for v in values) and any(v is not None for v in values):
            return columns[i], [float(v or 0) for v in values]
    return None


class AnalyticsScreen(TaskScreen):
    TITLE_TEXT = "analytics"
    BINDINGS = [
        Binding("ctrl+r,ctrl+enter", "run", "Run query", key_display="ctrl+r", priority=True),
        Binding("f2", "focus_reports", "Reports", key_display="F2", priority=True),
        Binding("f3", "focus_editor", "SQL editor", key_display="F3", priority=True),
        Binding("f4", "focus_results", "Results", key_display="F4", priority=True),
        Binding("escape", "focus_reports", "Leave the editor", key_display="Esc", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="analytics-body"):
            with Vertical(id="analytics-side"):
                yield Label("canned reports", classes="section")
                yield OptionList(*(Option(f"[b]{r.name}[/b]\n[dim]{escape(r.title)}[/]", id=r.name) for r in REPORTS.values()),
                                 id="analytics-reports")
            with Vertical(id="analytics-main"):
                yield TextArea("", language=None, id="analytics-sql", soft_wrap=True, tab_behavior="focus",
                               placeholder="SELECT … FROM results / events / jobs / dead_letters / bots / job_outcomes   (ctrl+r runs)")
                yield Label("pick a canned report (Enter runs it), or F3 to type SQL and ctrl+r to run it", id="analytics-status")
                with Horizontal(id="analytics-chart-row"):
                    yield Label("", id="analytics-chart-label")
                    yield Sparkline([], id="analytics-chart")
                yield DataTable(id="analytics-table", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#analytics-chart-row").display = False
        # Not the editor: with the list focused, 1-7, ? and q still switch screens, help and quit.
        self.query_one("#analytics-reports", OptionList).focus()

    # -- actions -------------------------------------------------------------------------------

    def action_run(self) -> None:
        sql = self.query_one("#analytics-sql", TextArea).text.strip()
        if not sql:
            self.show_status("type a query first (or pick a canned report with F2)", error=True)
            return
        self.run_query(sql)

    def action_focus_reports(self) -> None:
        self.query_one("#analytics-reports", OptionList).focus()

    def action_focus_editor(self) -> None:
        self.query_one("#analytics-sql", TextArea).focus()

    def action_focus_results(self) -> None:
        self.query_one("#analytics-table", DataTable).focus()

    @on(OptionList.OptionSelected, "#analytics-reports")
    def _report_picked(self, event: OptionList.OptionSelected) -> None:
        report = REPORTS.get(event.option.id or "")
        if report is not None:
            self.run_report(report)

    def run_report(self, report: Report) -> None:
        """Show the report's SQL in the editor (to read or adapt) and run it."""
        sql = "\n".join(line.strip() for line in report.sql.strip().splitlines())
        self.query_one("#analytics-sql", TextArea).load_text(sql)
        self.run_query(sql, label=report.name)

    # -- the query worker ----------------------------------------------------------------------

    @work(exclusive=True, group="analytics", name="query", exit_on_error=False)
    async def run_query(self, sql: str, label: str = "query") -> None:
        from corral.ledger.client import ask  # lazily: the TUI starts without the ledger's modules
        from corral.ledger.errors import QueryError

        nc = self.corral.nc
        if nc is None or not nc.is_connected:
            self.show_status("not connected to NATS: the query cannot be sent (see the banner)", error=True)
            return
        self.show_status(f"running {escape(label)}…")
        try:
            reply = await ask(nc, sql, max_rows=MAX_ROWS, timeout=QUERY_TIMEOUT)
        except QueryError as e:
            kind = "refused" if e.code == "403" else "timed out" if e.code == "408" else "failed"
            self.show_status(f"{label} {kind}: {e}", error=True)
            return
        except CorralError as e:  # TransportError: no ledger service answered
            self.show_status(f"{label}: {e}", error=True)
            return
        except Exception as e:  # noqa: BLE001 - never let a query take the dashboard down
            self.show_status(f"{label} failed: {type(e).__name__}: {e}", error=True)
            return
        self.show_result(label, reply.columns, reply.types, reply.rows, reply.truncated, reply.elapsed_ms)

    # -- drawing -------------------------------------------------------------------------------

    def show_status(self, text: str, *, error: bool = False) -> None:
        if not self.is_attached:
            return
        status = self.query_one("#analytics-status", Label)
        status.update(escape(text))
        status.set_class(error, "error")

    def show_result(self, label: str, columns: list[str], types: list[str], rows: list[list[Any]],
                    truncated: bool, elapsed_ms: float) -> None:
        if not self.is_attached:
            return
        table = self.query_one("#analytics-table", DataTable)
        table.clear(columns=True)
        for i, name in enumerate(columns):
            table.add_column(name or f"col{i + 1}", key=f"c{i}")
        table.add_rows([cell_text(v) for v in row] for row in rows)
        text = f"{label}: {len(rows)} row(s)"
        if truncated:
            text += f"  ·  truncated (first {len(rows)} shown; add a LIMIT or a WHERE)"
        self.show_status(f"{text}  ·  {elapsed_ms:.1f} ms")
        series = time_series(columns, types, rows)
        row = self.query_one("#analytics-chart-row")
        row.display = series is not None
        if series is not None:
            name, values = series
            self.query_one("#analytics-chart", Sparkline).data = values
            self.query_one("#analytics-chart-label", Label).update(
                f"{escape(name)} by {escape(columns[0])}\nmin {min(values):g} max {max(values):g}")

    def status_text(self) -> str:
        """The status line as the operator reads it (tests use this)."""
        return str(self.query_one("#analytics-status", Label).render())
