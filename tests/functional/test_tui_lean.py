"""The dashboard shows lean successes: a first delivery's result appears as its started and succeeded."""

from __future__ import annotations

import pytest

from corral.core.history import job_events, job_result
from corral.core.messages import make_job
from corral.core.submit import submit
from tests.conftest import eventually
from tests.functional.test_tui import SIZE, cell, dashboard, table, until

pytestmark = pytest.mark.anyio


def _event_rows(app, job_id: str) -> list[tuple[str, str, str]]:
    """(type, bot, detail) of the events table's rows for ``job_id``, in table order."""
    t = table(app, "#events-table")
    keys = [k.value for k in t.rows if k.value is not None and t.value(k.value, "job_id") == job_id]
    return [(t.value(k, "type"), t.value(k, "bot"), t.value(k, "detail")) for k in keys]


async def test_lean_successes_before_and_after_the_dashboard_starts_show_as_started_and_succeeded(provisioned, bots, js):
    """Given a lean bot, when one job succeeds before the dashboard opens and one after, then Events and Jobs show both."""
    bots(provisioned.url, "b1")
    before = make_job("sum", {"a": 1, "b": 2})
    await submit(js, before)
    await eventually(lambda: job_result(js, before.id), what="the first result")
    assert await job_events(js, before.id) == []  # lean: nothing but the result records it
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("5")
        await until(pilot, lambda: len(_event_rows(app, before.id)) == 2, what="the read-back success")
        assert [(t, b) for t, b, _ in _event_rows(app, before.id)] == [("started", "b1"), ("succeeded", "b1")]
        assert _event_rows(app, before.id)[1][2].startswith("attempt 1")
        after = make_job("sum", {"a": 3, "b": 4})
        await submit(js, after)
        await until(pilot, lambda: len(_event_rows(app, after.id)) == 2, what="the live success")
        assert [t for t, _, _ in _event_rows(app, after.id)] == ["started", "succeeded"]
        await pilot.press("3")
        for job in (before, after):
            await until(pilot, lambda j=job: cell(app, "#jobs-table", j.id, "last") == "succeeded", what="the jobs list")
            assert cell(app, "#jobs-table", job.id, "bot") == "b1" and cell(app, "#jobs-table", job.id, "attempt") == "1"
