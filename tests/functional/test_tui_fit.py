"""The dashboard at 80x24: what stays visible, the keys that must work, and fleet truth after a crash.

A real nats-server, real bots and a real `corral fleet` supervisor; no sleeps
(:func:`until` polls the app with a deadline).
"""

from __future__ import annotations

import os
import signal

import pytest

from corral.core.fleet import write_desired
from corral.core.messages import make_job
from corral.core.submit import submit
from corral.tui.screens.confirm import ConfirmScreen
from corral.tui.widgets.job_inspector import JobInspector
from tests.functional.test_tui import cell, dashboard, table, until
from tests.functional.test_tui_fleet import HOST, supervisor  # noqa: F401 - the fixture

pytestmark = pytest.mark.anyio

SMALL = (80, 24)


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def scale_once_supervised(pilot, app, js) -> None:
    """Wait for the supervisor (it writes its own ``--count 0`` as it starts), then ask it for one bot."""
    await until(pilot, lambda: any(h.host == HOST and h.supervisor for h in app.store.fleet), timeout=20, what="the supervisor")
    await write_desired(js, HOST, 1, "tester@test")


async def test_escape_leaves_the_job_search_so_a_digit_switches_screens(provisioned):
    """Given the job-search input focused, when the operator presses Esc then 4, then the dead-letter screen opens."""
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("3", "f")
        assert app.focused is app.screen.query_one("#job-search")
        await pilot.press("escape", "4")
        await until(pilot, lambda: app.current_mode == "dead", what="the dead-letter screen")


async def test_enter_on_an_in_flight_row_opens_the_inspector(provisioned, bots, js):
    """Given a running job, when the operator presses Enter on its in-flight row, then the inspector shows it."""
    bots(provisioned.url, "b1")
    job = make_job("sleep", {"seconds": 30, "step": 0.5})
    await submit(js, job)
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: cell(app, "#inflight-table", job.id, "bot") == "b1", what="the in-flight row")
        table(app, "#inflight-table").focus()
        await pilot.press("enter")
        # At 80 columns the inspector wraps the 32-character id: read it unwrapped.
        await until(pilot, lambda: job.id in app.screen.query_one(JobInspector).text().replace("\n", ""), what="the inspector")


async def test_at_80x24_the_explanatory_columns_and_quit_stay_visible(provisioned, bots, js):
    """Given a dead letter and events, when the screens are shown at 80x24, then state, error, type and bot columns and q Quit show."""
    bots(provisioned.url, "b1")
    job = make_job("fail", {"message": "upstream 503 from the billing service, retry later"}, max_attempts=1)
    await submit(js, job)
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: "work-default-normal" in table(app, "#consumers").rows, what="the consumers")
        assert "state" in table(app, "#consumers").shown_columns()
        assert "q Quit" in screen_text(app)
        await pilot.press("4")
        await until(pilot, lambda: table(app, "#dlq-table").row_count == 1, what="the dead letter")
        assert {"job", "error", "kind"} <= set(table(app, "#dlq-table").shown_columns())
        detail = await until(pilot, lambda: app.screen.query_one("#dlq-detail").text(), what="the detail pane")
        assert "upstream 503 from the billing service, retry later" in detail and job.id in detail
        await pilot.press("5")
        await until(pilot, lambda: table(app, "#events-table").row_count, what="events")
        assert {"time", "type", "job", "bot", "detail"} <= set(table(app, "#events-table").shown_columns())
        for mode in "1234678":
            await pilot.press(mode)
            await pilot.pause()
            assert "q Quit" in screen_text(app), f"no q Quit in the footer of {app.current_mode}"


async def test_draining_a_supervised_bot_says_the_supervisor_replaces_it(provisioned, supervisor, js):  # noqa: F811
    """Given a supervised bot, when the operator presses d on it, then the question says it is replaced and offers scaling down."""
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("2")
        await scale_once_supervised(pilot, app, js)
        await until(pilot, lambda: cell(app, "#bots-table", f"{HOST}-1", "state") == "ready", timeout=30, what="the bot ready")
        await until(pilot, lambda: any(h.supervisor for h in app.store.fleet), what="the fleet read")
        bots_table = table(app, "#bots-table")
        bots_table.move_cursor(row=bots_table.get_row_index(f"{HOST}-1"))
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        text = app.screen.text()
        assert "the supervisor will start a replacement" in text and f"Scale {HOST} to 0" in text
        await pilot.press("a")
        await until(pilot, lambda: app.store.desired(next(h for h in app.store.fleet if h.host == HOST)) == 0, what="desired 0")


async def test_a_sigkilled_supervised_bot_shows_as_replaced_and_its_slot_counts_the_restart(provisioned, supervisor, js):  # noqa: F811
    """Given a supervised bot, when it is SIGKILLed, then its old row stays as replaced with its pid, and the slot shows the exit."""
    name = f"{HOST}-1"
    app = dashboard(provisioned.url)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await scale_once_supervised(pilot, app, js)
        await until(pilot, lambda: cell(app, "#bots-table", name, "state") == "ready", timeout=30, what="the bot ready")
        pid = int(cell(app, "#bots-table", name, "pid"))
        os.kill(pid, signal.SIGKILL)
        old = f"{name}@{pid}"
        await until(pilot, lambda: cell(app, "#bots-table", old, "state") == "replaced", timeout=20, what="the old incarnation as replaced")
        assert cell(app, "#bots-table", old, "pid") == str(pid)
        await until(pilot, lambda: cell(app, "#bots-table", name, "pid") not in (None, str(pid)), what="the new incarnation")
        await pilot.press("6")
        await until(pilot, lambda: cell(app, "#slots-table", name, "restarts") == "1", timeout=20, what="one restart counted")
        assert cell(app, "#slots-table", name, "last_exit") == "SIGKILL (exited)"
