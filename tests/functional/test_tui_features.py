"""The dashboard's Features screen (schedules, groups, locks) against a real nats-server and real bots.

Every assertion reads what the operator sees (table cells, labels) or what the
server stores. No sleeps: :func:`until` / :func:`until_async` let the app run
until a condition holds or its deadline passes.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from corral.core import schedules
from corral.core.groups import make_group
from corral.core.history import walk
from corral.core.messages import Event, event_decoder, make_job
from corral.core.names import EVENTS_STREAM, ops_events_subject
from corral.harness.server import free_port
from corral.core.submit import submit
from tests.functional.test_tui import SIZE, cell, dashboard, table, until
from tests.functional.test_tui_fleet import until_async
from corral.tui.widgets.banner import ConnectionBanner

pytestmark = pytest.mark.anyio

SMALL = (80, 24)  #: the smallest terminal the dashboard is made for


async def schedule_named(js, name: str) -> schedules.Schedule | None:
    return next((s for s in await schedules.list_schedules(js) if s.name == name), None)


async def schedule_ops(js) -> list[Event]:
    return [event_decoder.decode(m.data or b"") async for m in walk(js, EVENTS_STREAM, ops_events_subject("schedule"))]


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def open_features(pilot, app) -> None:
    await until(pilot, lambda: app.store.connected, what="the connection")
    await pilot.press("8")
    await until(pilot, lambda: app.screen.query("#schedules-table") and app.store.features_at, what="the first features read")


async def test_a_schedule_added_from_the_form_is_stored_shown_and_audited_on_an_80x24_terminal(provisioned, js):
    """Given 80x24, when the operator fills the add form (a bad `when` first), then it is refused, then stored, shown, audited."""
    app = dashboard(provisioned.url)
    async with app.run_test(size=SMALL) as pilot:
        await open_features(pilot, app)
        for key in ("schedules", "groups", "locks"):  # every table keeps a header and rows visible
            assert table(app, f"#{key}-table").region.height >= 3, key
        await pilot.press("a")
        await until(pilot, lambda: app.screen.query("#schedule-name"), what="the add form")
        assert app.screen.query_one("#schedule-ok").region.bottom <= SMALL[1]
        await pilot.press(*"nightly")
        app.screen.query_one("#schedule-when", Input).value = "every ten minutes"
        await pilot.press("enter")
        await until(pilot, lambda: "not understood" in text_of(app, "#schedule-error"), what="the refusal")
        assert await schedule_named(js, "nightly") is None

        app.screen.query_one("#schedule-when", Input).value = "cron 0 0 3 * * *"
        await pilot.press("enter")

        stored = await until_async(pilot, lambda: schedule_named(js, "nightly"), what="the stored schedule")
        assert (stored.spec, stored.job.kind, stored.job.args) == ("0 0 3 * * *", "sum", {"a": 1, "b": 2})
        assert stored.target == "corral.schedules.fire.default.normal"
        await until(pilot, lambda: cell(app, "#schedules-table", "nightly", "spec") == "0 0 3 * * *", what="the row")
        assert cell(app, "#schedules-table", "nightly", "target") == "default/normal"
        (op,) = await until_async(pilot, lambda: schedule_ops(js), what="the audit event")
        assert op.actor == "tester@test" and op.detail == "add schedule nightly: sum 0 0 3 * * *"


async def test_a_schedule_removed_from_the_screen_asks_first_then_is_gone(provisioned, js):
    """Given two schedules, when the operator presses d on one, says no, then d and yes, then only that one is gone."""
    await schedules.add(js, "doomed", make_job("sum", {"a": 1}), "@every 1h")
    await schedules.add(js, "kept", make_job("echo", {"x": 1}), "@every 1h")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await open_features(pilot, app)
        await until(pilot, lambda: table(app, "#schedules-table").row_count == 2, what="both schedules listed")
        schedules_table = table(app, "#schedules-table")
        while schedules_table.selected_key() != "doomed":
            await pilot.press("down")

        await pilot.press("d")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the confirmation")
        assert "Remove schedule doomed (@every 1h, sum)" in text_of(app, "#confirm-question")
        await pilot.press("n")
        await until(pilot, lambda: not app.screen.query("#confirm-question"), what="the confirmation to close")
        assert await schedule_named(js, "doomed") is not None

        await pilot.press("d")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the confirmation")
        await pilot.press("y")

        await until_async(pilot, lambda: _names_are(js, ["kept"]), what="only kept left on the server")
        await until(pilot, lambda: cell(app, "#schedules-table", "doomed", "name") is None, what="the row to go")
        assert cell(app, "#schedules-table", "kept", "kind") == "echo"
        (op,) = await until_async(pilot, lambda: schedule_ops(js), what="the audit event")
        assert (op.actor, op.detail) == ("tester@test", "remove schedule doomed")


async def _names_are(js, names: list[str]) -> bool:
    return [s.name for s in await schedules.list_schedules(js)] == names


async def test_a_running_group_and_a_held_lock_show_then_the_callback_runs(provisioned, bots, js):
    """Given a group whose last member holds a lock, then 2/3 and the lock show; once it ends, 3/3, callback run, no lock."""
    bots(provisioned.url, "b1")
    holder = make_job("locked_sleep", {"lock": "tui-lock", "seconds": 6, "lease": 3})
    members = [make_job("sum", {"a": 1, "b": 2}), make_job("sum", {"a": 3, "b": 4}), holder]
    for job in make_group(members, make_job("echo", {"report": "tui"}), group="tui-group"):
        await submit(js, job)  # the sums first: one bot runs them before the locked sleep
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await open_features(pilot, app)
        await until(pilot, lambda: cell(app, "#locks-table", "tui-lock", "owner") == f"b1/{holder.id}", what="the held lock")
        left = cell(app, "#locks-table", "tui-lock", "left")
        assert left.endswith("s") and 0 < float(left[:-1]) <= 3
        await until(pilot, lambda: cell(app, "#groups-table", "tui-group", "done") == "2/3", what="the group at 2/3")
        assert cell(app, "#groups-table", "tui-group", "callback") == "echo"
        assert cell(app, "#groups-table", "tui-group", "submitted") == "no (1 to go)"

        await until(pilot, lambda: cell(app, "#groups-table", "tui-group", "submitted") == "yes · succeeded",
                    timeout=30, what="the callback to run")
        assert cell(app, "#groups-table", "tui-group", "done") == "3/3"
        await until(pilot, lambda: cell(app, "#locks-table", "tui-lock", "name") is None, what="the lock released")


async def test_the_features_screen_opens_without_a_server_and_says_it_is_reading():
    """Given no server, when the operator opens Features and the add form, then nothing crashes and the banner is red."""
    app = dashboard(f"nats://127.0.0.1:{free_port()}")
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("8")
        await until(pilot, lambda: "unreachable" in text_of(app, "#banner"), what="the red banner")
        assert text_of(app, "#features-status") == "reading…"
        await pilot.press("a")
        await until(pilot, lambda: app.screen.query("#schedule-name"), what="the add form")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen.query(ConnectionBanner), what="back on the screen")
        assert app.is_running


async def test_a_kind_at_its_concurrency_cap_shows_its_slots_full(provisioned, bots, js):
    """Given a cap of 1 on `sleep` and two sleep jobs, the limits table shows 1/1 while one runs, then 0/1."""
    from corral.core.limits import LimitDef, set_limit

    await set_limit(js, "sleep", LimitDef(concurrency=1, rate=50, per=1.0))
    bots(provisioned.url, "b1")
    for _ in range(2):
        await submit(js, make_job("sleep", {"seconds": 5}))
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await open_features(pilot, app)
        await until(pilot, lambda: cell(app, "#limits-table", "sleep", "cap") == "1/1", timeout=30, what="the cap full")
        assert cell(app, "#limits-table", "sleep", "rate").endswith("/50 per 1s")
        await until(pilot, lambda: cell(app, "#limits-table", "sleep", "cap") == "0/1", timeout=45, what="the slot released")
