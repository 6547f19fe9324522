"""The Jobs screen and the submit form on an 80x24 terminal: progress, cancelling, priorities.

Real nats-server, real bot processes, the real app driven through Pilot. Every
assertion reads what the operator sees (cells, the inspector, the form) or what
the server stores. No sleeps: :func:`until` / :func:`until_async` poll with deadlines.
"""

from __future__ import annotations

import re

import pytest
from textual.widgets import Select

from corral.core.history import job_events, walk
from corral.core.messages import Event, EventType, event_decoder, job_decoder, make_job
from corral.core.names import EVENTS_STREAM, JOBS_STREAM, job_subject, ops_events_subject
from corral.core.submit import submit
from tests.functional.test_tui import cell, dashboard, table, until
from tests.functional.test_tui_features import SMALL, text_of
from tests.functional.test_tui_fleet import until_async
from corral.tui.widgets.job_inspector import JobInspector

pytestmark = pytest.mark.anyio


def column_in_view(app, selector: str, column: str, chars: int = 4) -> bool:
    """Whether the first ``chars`` characters of ``column`` are within the table's width (no scrolling)."""
    t = table(app, selector)
    x = 0
    for col in t.ordered_columns:
        if col.key.value == column:
            return x + chars <= t.scrollable_content_region.width
        x += col.get_render_width(t)
    return False


def inspector(app) -> str:
    return app.screen.query_one(JobInspector).text()


async def cancel_ops(js) -> list[Event]:
    return [event_decoder.decode(m.data or b"") async for m in walk(js, EVENTS_STREAM, ops_events_subject("cancel"))]


async def lifecycle_end(js, job_id: str) -> Event | None:
    """The job's last event once it is ``cancelled`` (progress reports aside: the bot flushes them
    every half second, so the last one may land just after), else None."""
    lifecycle = [e for e in await job_events(js, job_id) if e.type != EventType.PROGRESS]
    return lifecycle[-1] if lifecycle and lifecycle[-1].type == EventType.CANCELLED else None


async def pending_on(js, subject: str) -> list:
    return [job_decoder.decode(m.data or b"") async for m in walk(js, JOBS_STREAM, subject)]


async def test_a_running_job_shows_its_progress_and_the_operator_cancels_it_from_the_jobs_screen(provisioned, bots, js):
    """Given a sleep job reporting progress, then its row shows it; when the operator presses c and y, it ends cancelled, audited."""
    bots(provisioned.url, "b1")
    job = make_job("sleep", {"seconds": 30, "step": 0.5})
    await submit(js, job)
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("3")
        progress = await until(pilot, lambda: re.fullmatch(r"\d+% slept .*", cell(app, "#inflight-table", job.id, "progress") or ""),
                               what="the progress in the in-flight row")
        assert column_in_view(app, "#inflight-table", "progress"), f"progress off screen at 80 columns: {progress[0]}"
        assert cell(app, "#inflight-table", job.id, "id") == job.id[:8]
        assert cell(app, "#inflight-table", job.id, "bot") == "b1"

        await pilot.press("shift+tab")  # from the recent jobs table to the in-flight table
        assert app.focused is table(app, "#inflight-table")
        await pilot.press("i")
        shown = await until(pilot, lambda: "progress: " in inspector(app) and inspector(app), what="the inspector with the latest progress")
        assert "status: started" in shown and "default/normal" in shown
        await pilot.press("c")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the confirmation")
        question = text_of(app, "#confirm-question")
        assert job.id in question and "running on b1" in question
        await pilot.press("y")

        ended = await until_async(pilot, lambda: lifecycle_end(js, job.id), timeout=10, what="the cancelled event")
        assert ended.detail == "cancelled while running" and ended.bot == "b1"
        (op,) = await until_async(pilot, lambda: cancel_ops(js), what="the operator event")
        assert (op.type, op.actor, op.detail) == (EventType.OPERATOR, "tester@test", f"cancel job {job.id}")
        await until(pilot, lambda: "status: cancelled" in inspector(app), what="the inspector to show it cancelled")
        await until(pilot, lambda: cell(app, "#inflight-table", job.id, "id") is None, what="the in-flight row to go")

        # An ended job is not offered for cancelling again.
        table(app, "#jobs-table").focus()
        await until(pilot, lambda: cell(app, "#jobs-table", job.id, "last") == "cancelled", what="the recent row cancelled")
        await pilot.press("c")
        assert not app.screen.query("#confirm-question")
        assert len(await cancel_ops(js)) == 1


async def test_jobs_submitted_from_the_form_with_priority_high_are_stored_as_high_on_an_80x24_terminal(provisioned, js):
    """Given no bots, when the operator submits 3 jobs with priority high, then 3 high jobs are stored and the inspector says so."""
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("s")
        await until(pilot, lambda: app.screen.query("#submit-priority"), what="the submit form")
        assert app.screen.query_one("#submit-go").region.bottom <= SMALL[1]
        priority = app.screen.query_one("#submit-priority", Select)
        assert priority.value == "normal"

        await pilot.press("tab", "backspace", "3")  # kind -> count, 3
        await pilot.press("tab", "tab", "tab")  # args, queue, priority
        assert app.focused is priority
        await pilot.press("enter", "up", "enter")  # open the list, normal -> high, choose it
        await until(pilot, lambda: priority.value == "high", what="high chosen")
        await pilot.click("#submit-go")

        await until(pilot, lambda: "accepted 3" in text_of(app, "#submit-status"), what="the summary")
        high = await pending_on(js, job_subject("default", "high"))
        assert len(high) == 3 and {(j.kind, j.priority) for j in high} == {("sum", "high")}
        assert await pending_on(js, job_subject("default", "normal")) == []
        await pilot.press("escape", "3", "f", *high[0].id, "enter")
        await until(pilot, lambda: "default/high" in inspector(app), what="the inspector showing the priority")
        assert "status: pending" in inspector(app)
