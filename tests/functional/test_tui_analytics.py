"""The dashboard's Analytics screen against a real nats-server, real bots and a real `corral ledger`.

The ledger subprocess folds the streams into its DuckDB file; the dashboard only
asks it over NATS (``corral.ledger.query``). No sleeps: the ledger is polled with
:func:`corral.ledger.client.ask` until it holds every result, and Pilot runs the app
until what the operator reads shows up (:func:`tests.functional.test_tui.until`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, OptionList, Sparkline, TextArea

from corral.core.errors import TransportError
from corral.ledger.client import ask
from corral.core.messages import make_job
from corral.harness.server import free_port
from corral.core.settings import Settings
from corral.core.submit import submit_many
from tests.conftest import eventually
from tests.functional.test_tui import SIZE, until
from corral.tui.app import CorralApp
from corral.tui.screens.analytics import AnalyticsScreen
from corral.core.spawn import corral_argv

pytestmark = pytest.mark.anyio

JOBS = 20


@pytest.fixture
def ledger(provisioned, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real `corral ledger --db tmp/ledger.duckdb` subprocess, killed at teardown."""
    with open(tmp_path / "ledger.log", "wb") as log:
        proc = subprocess.Popen(
            corral_argv("ledger", "--db", str(tmp_path / "ledger.duckdb"),
             "--server", provisioned.url, "--linger-ms", "50"),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def results_in_ledger(js) -> int:
    """Rows in the ledger's results table; -1 while the ledger does not answer yet."""
    try:
        reply = await ask(js._nc, "SELECT count(*) FROM results", timeout=5)
    except TransportError:
        return -1
    return reply.rows[0][0]


def table_rows(app: CorralApp) -> list[list[str]]:
    t = app.screen.query_one("#analytics-table", DataTable)
    return [[str(c) for c in t.get_row(k)] for k in t.rows]


def table_columns(app: CorralApp) -> list[str]:
    t = app.screen.query_one("#analytics-table", DataTable)
    return [str(c.label) for c in t.columns.values()]


def status(app: CorralApp) -> str:
    screen = app.screen
    return screen.status_text() if isinstance(screen, AnalyticsScreen) else ""


async def type_query(pilot, app: CorralApp, sql: str) -> None:
    """Empty the editor, type ``sql`` key by key, and run it with ctrl+r."""
    editor = app.screen.query_one("#analytics-sql", TextArea)
    await pilot.press("f3")
    assert editor.has_focus
    editor.clear()
    await pilot.press(*sql)
    assert editor.text == sql
    await pilot.press("ctrl+r")


async def test_queries_reports_and_refusals_on_the_analytics_screen(provisioned, bots, ledger, js):
    """Given a ledger holding 20 sum results, then a typed count shows 20, rates-by-kind shows sum, and a DELETE is refused."""
    bots(provisioned.url, "b1")
    summary = await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(JOBS)])
    assert summary.ok
    await eventually(lambda: _has(js, JOBS), timeout=30, what=f"{JOBS} results in the ledger")

    app = CorralApp(Settings(servers=(provisioned.url,)), actor="tester@test")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("7")
        await until(pilot, lambda: isinstance(app.screen, AnalyticsScreen), what="the analytics screen")

        await type_query(pilot, app, "SELECT count(*) AS n FROM results")
        await until(pilot, lambda: table_rows(app) == [[str(JOBS)]], what="the count in the table")
        assert table_columns(app) == ["n"]
        assert "1 row(s)" in status(app) and "truncated" not in status(app)

        reports = app.screen.query_one("#analytics-reports", OptionList)
        await pilot.press("escape")  # leave the editor: back to the reports list
        assert reports.has_focus
        reports.highlighted = reports.get_option_index("rates-by-kind")
        await pilot.press("enter")
        await until(pilot, lambda: any(r[0] == "sum" for r in table_rows(app)), what="the sum row of rates-by-kind")
        row = next(r for r in table_rows(app) if r[0] == "sum")
        assert dict(zip(table_columns(app), row, strict=True))["succeeded"] == str(JOBS)
        assert "rates-by-kind: " in status(app)

        await type_query(pilot, app, "DELETE FROM results")
        await until(pilot, lambda: "refused" in status(app), what="the refusal")
        assert "read-only: DELETE statements are refused" in status(app)
        assert app.screen.query_one("#analytics-status").has_class("error")
        assert any(r[0] == "sum" for r in table_rows(app))  # the last good result stays

        await type_query(pilot, app, "SELECT * FROM range(600)")
        await until(pilot, lambda: "truncated" in status(app), what="the truncated result")
        assert len(table_rows(app)) == 500 and "500 row(s)" in status(app)
        assert not app.screen.query_one("#analytics-chart-row").display

        # The timeline, not events: a first delivery's success is a result, with no event of its own.
        await type_query(pilot, app, "SELECT ts, seq FROM timeline ORDER BY ts")
        await until(pilot, lambda: app.screen.query_one("#analytics-chart-row").display, what="the time-series chart")
        chart = app.screen.query_one("#analytics-chart", Sparkline)
        assert len(chart.data) == len(table_rows(app)) >= 2 * JOBS
        assert app.is_running


async def test_without_a_ledger_the_screen_says_so_and_keeps_running(provisioned):
    """Given no ledger service, when a query runs, then the status says no ledger is running."""
    app = CorralApp(Settings(servers=(provisioned.url,)), actor="tester@test")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("7")
        await until(pilot, lambda: isinstance(app.screen, AnalyticsScreen), what="the analytics screen")
        await type_query(pilot, app, "SELECT 1")
        await until(pilot, lambda: "no ledger service is running" in status(app), what="the no-ledger message")
        assert app.is_running


async def _has(js, n: int) -> bool:
    return await results_in_ledger(js) >= n


async def test_with_the_server_unreachable_a_query_says_not_connected():
    """Given no server at the URL, when a query runs, then the status says the dashboard is not connected."""
    app = CorralApp(Settings(servers=(f"nats://127.0.0.1:{free_port()}",)), actor="tester@test")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await until(pilot, lambda: isinstance(app.screen, AnalyticsScreen), what="the analytics screen")
        await type_query(pilot, app, "SELECT 1")
        await until(pilot, lambda: "not connected to NATS" in status(app), what="the not-connected message")
        await pilot.press("escape", "question_mark")  # the list has focus again: app keys work
        await until(pilot, lambda: app.screen.query("#help-box"), what="the help screen")
        assert app.is_running
