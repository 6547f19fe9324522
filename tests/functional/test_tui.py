"""The dashboard against a real nats-server and real bot processes, driven through Pilot.

Every assertion reads what the operator sees (table cells, labels, the banner).
No sleeps: :func:`until` lets the app run (``pilot.pause``) until a condition
holds or its deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from corral.core.messages import make_job
from corral.harness.server import free_port
from corral.core.settings import Settings
from corral.core.submit import submit
from corral.tui.app import CorralApp
from corral.tui.widgets.banner import ConnectionBanner
from corral.tui.widgets.synced_table import SyncedTable

pytestmark = pytest.mark.anyio

SIZE = (160, 48)


async def until(pilot, check: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Let the app run until ``check()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def table(app: CorralApp, selector: str) -> SyncedTable:
    return app.screen.query_one(selector, SyncedTable)


def cell(app: CorralApp, selector: str, key: str, column: str) -> str | None:
    """The whole text of one cell, or None while the row is not shown."""
    t = table(app, selector)
    if key not in t.rows:
        return None
    return t.value(key, column)


def rows_where(app: CorralApp, selector: str, column: str, text: str) -> list[str]:
    t = table(app, selector)
    return [k.value for k in t.rows if k.value is not None and t.value(k.value, column) == text]


def dashboard(url: str) -> CorralApp:
    return CorralApp(Settings(servers=(url,)), actor="tester@test")


async def test_a_job_submitted_from_the_form_completes_in_the_jobs_and_events_screens(provisioned, bots):
    """Given a bot, when the operator submits a sum job from the form, then Jobs and Events show it succeeded."""
    bots(provisioned.url, "b1")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("s")
        await until(pilot, lambda: app.screen.query("#submit-kind"), what="the submit form")
        await pilot.press("enter")  # kind "sum", args {"a": 1, "b": 2}, queue default, count 1
        status = await until(pilot, lambda: "job " in str(app.screen.query_one("#submit-status").render())
                             and str(app.screen.query_one("#submit-status").render()), what="the submit status")
        assert "accepted 1" in status
        job_id = status.rsplit("job ", 1)[1].strip()
        await pilot.press("escape", "3")
        await until(pilot, lambda: cell(app, "#jobs-table", job_id, "last") == "succeeded", timeout=15, what="the job to succeed")
        assert cell(app, "#jobs-table", job_id, "kind") == "sum"
        await pilot.press("5")
        await until(pilot, lambda: [k for k in rows_where(app, "#events-table", "type", "succeeded")
                                    if cell(app, "#events-table", k, "job_id") == job_id], what="the succeeded event")


async def test_a_killed_bot_turns_dead_in_the_bots_table_then_drops_off(provisioned, bots):
    """Given a live bot, when it is SIGKILLed, then its row shows dead once its key expires, then disappears."""
    bot = bots(provisioned.url, "b1")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") == "ready", what="b1 ready")
        bot.kill()
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") == "dead", timeout=10, what="b1 dead")
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") is None, timeout=12, what="b1 to drop off")


async def test_replaying_from_the_dead_letter_screen_empties_the_list(provisioned, bots, js):
    """Given a dead job (and no bot left to kill it again), when the operator replays it, then the list is empty."""
    bot = bots(provisioned.url, "b1")
    job = make_job("fail", {}, max_attempts=1)
    await submit(js, job)
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: rows_where(app, "#dlq-table", "full_id", job.id), what="the dead letter")
        bot.kill()
        await pilot.press("r")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the confirmation")
        assert "Replay 1 dead letter(s)" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("y")
        await until(pilot, lambda: table(app, "#dlq-table").row_count == 0, what="an empty list")
        assert str(app.screen.query_one("#dlq-count").render()) == "0 dead letters"
        await pilot.press("1")
        await until(pilot, lambda: cell(app, "#consumers", "work-default-normal", "pending") == "1", what="the job pending again")


async def test_draining_a_bot_from_the_bots_screen_stops_it(provisioned, bots):
    """Given a live bot, when the operator drains it and confirms, then the process exits and its row shows stopped."""
    bot = bots(provisioned.url, "b1")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") == "ready", what="b1 ready")
        await pilot.press("d")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: bot.proc.poll() is not None, timeout=15, what="the bot process to exit")
        assert bot.proc.returncode == 0
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") in ("stopped", None), what="b1 stopped")


async def test_an_unreachable_server_shows_in_the_banner_and_every_screen_still_opens():
    """Given no server at the URL, then the banner says unreachable and switching screens does not crash."""
    app = dashboard(f"nats://127.0.0.1:{free_port()}")
    async with app.run_test(size=SIZE) as pilot:
        for key in ("1", "2", "3", "4", "5", "question_mark", "escape", "s", "escape"):
            await pilot.press(key)
            await until(pilot, lambda: "unreachable" in str(app.screen.query_one(ConnectionBanner).render())
                        if app.screen.query(ConnectionBanner) else True, what="the unreachable banner")
        assert app.is_running


def heartbeat_age(app: CorralApp, bot: str) -> float | None:
    text = cell(app, "#bots-table", bot, "heartbeat")
    return float(text.split("s ago")[0]) if text and text.endswith("s ago") else None


async def test_the_dashboard_recovers_by_itself_after_a_server_restart(provisioned, bots):
    """Given a connected dashboard, when the server stops and starts again, then the banner goes red, then green, and heartbeats resume."""
    bots(provisioned.url, "b1")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") == "ready", what="b1 ready")
        banner = lambda: str(app.screen.query_one(ConnectionBanner).render())  # noqa: E731
        provisioned.stop()
        await until(pilot, lambda: "unreachable" in banner() or "not answering" in banner(), timeout=10, what="the red banner")
        provisioned.start()
        restarted = time.monotonic()
        await until(pilot, lambda: "connected to" in banner(), timeout=15, what="the green banner")
        # A heartbeat younger than the time since the restart can only have come through a live watch.
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") == "ready"
                    and (heartbeat_age(app, "b1") or 99) + 0.2 < time.monotonic() - restarted,
                    timeout=15, what="a heartbeat written after the restart")
