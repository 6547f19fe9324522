"""The Logs screen following real bot processes through CORRAL_LOGS (Pilot, real nats-server, real bots)."""

from __future__ import annotations

import json

import pytest

from corral.core.logship import recent_lines
from corral.core.messages import make_job
from corral.core.submit import submit
from tests.functional.test_tui import dashboard, table, until

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


def processes(app) -> set[str]:
    t = table(app, "#logs-table")
    return {t.value(k.value, "process") for k in t.rows if k.value is not None}


async def test_the_log_tail_shows_a_bots_lines_live_and_filters_them_by_bot_and_job(provisioned, bots, js):
    """Given two running bots, when the operator opens Logs and filters bot=b1, then only b1's lines show, and a job
    b1 runs after that appears live; job=ID narrows to that job's lines."""
    bots(provisioned.url, "b1")
    bots(provisioned.url, "b2")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        await until(pilot, lambda: {"b1", "b2"} <= processes(app), timeout=20, what="both bots' lines")
        await pilot.press("slash", *"bot=b1", "enter")
        await until(pilot, lambda: processes(app) == {"b1"}, what="only b1's lines")

        # A success logs at debug only (a per-second summary stands for it); a failure logs its own
        # warning and dead-letter lines, whichever bot ran it. Filter to the job alone.
        job = make_job("fail", {"p": 1.0}, max_attempts=1)
        await submit(js, job)
        app.screen.query_one("#logs-filter").value = f"job={job.id}"
        t = table(app, "#logs-table")
        await until(pilot, lambda: t.row_count > 0 and all(job.id in t.value(k.value, "fields") for k in t.rows if k.value),
                    timeout=20, what="only the job's lines, live")
    assert [line for line in await recent_lines(js, "b1") if line.process == "b1"], "b1's lines stored in CORRAL_LOGS"


async def test_the_log_tail_starts_over_after_a_server_restart_and_shows_each_line_once(provisioned, bots):
    """Given the Logs screen following b1, when the server stops and starts again, then b1's reconnect line shows
    (read back even if it was published before the dashboard was back) and no line shows twice."""
    bots(provisioned.url, "b1")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        await until(pilot, lambda: "b1" in processes(app), timeout=20, what="b1's lines")
        provisioned.stop()
        await until(pilot, lambda: not app.store.connected, timeout=10, what="the dashboard to notice")
        provisioned.start()
        reconnected = lambda: [line for _, line in app.store.logs  # noqa: E731
                               if line.process == "b1" and line.record.get("event") == "nats.reconnected"]
        await until(pilot, reconnected, timeout=30, what="b1's nats.reconnected line after the restart")
        keys = [(line.subject, json.dumps(line.record, sort_keys=True)) for _, line in app.store.logs]
        assert len(keys) == len(set(keys)), "a line read back after the reconnect is shown twice"
