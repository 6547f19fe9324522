"""The dashboard's Fleet screen against a real nats-server and a real `corral fleet` supervisor.

Scaling from the screen writes ``desired.<host>``; the supervisor then starts or
drains real bot processes. No sleeps: :func:`until` lets the app run until a
condition holds or its deadline passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from corral.core.settings import Settings
from corral.core.status import live_bots
from corral.tui.app import CorralApp
from corral.tui.widgets.synced_table import SyncedTable
from corral.core.spawn import corral_argv

from tests.functional.test_tui import until

pytestmark = pytest.mark.anyio

SIZE = (160, 48)
HOST = "tuihost"
#: Short TTLs and backoff, as in test_fleet.py, so drained bots disappear within seconds.
FAST = ("--bot-ttl", "3", "--ttl", "3", "--backoff-base", "0.2", "--backoff-max", "2", "--stop-timeout", "15")


@pytest.fixture
def supervisor(provisioned, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real `corral fleet --host tuihost --count 0` subprocess, drained (SIGTERM) at teardown."""
    log_path = tmp_path / f"fleet-{HOST}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            corral_argv("fleet", "--server", provisioned.url, "--host", HOST,
             "--count", "0", "--log-dir", str(tmp_path / "bots"), *FAST),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if os.environ.get("FLEET_TEST_LOGS"):
                print(log_path.read_text(errors="replace"))


async def until_async(pilot, check: Callable[[], Awaitable[object]], timeout: float = 15.0, what: str = "condition") -> object:
    """:func:`until` for a check that reads NATS itself."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def fleet_cell(app: CorralApp, column: str) -> str | None:
    t = app.screen.query_one("#fleet-table", SyncedTable)
    return t.value(HOST, column) if HOST in t.rows else None


def live_names(js) -> Callable[[], Awaitable[set[str]]]:
    async def names() -> set[str]:
        return {b.name for b in await live_bots(js) if b.name.startswith(f"{HOST}-")}
    return names


async def test_scaling_a_host_from_the_fleet_screen_starts_and_drains_its_bots(provisioned, supervisor, js):
    """Given a supervisor at 0, when the operator presses + twice then - twice, then 2 bots start, then drain."""
    app = CorralApp(Settings(servers=(provisioned.url,)), actor="tester@test")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("6")
        await until(pilot, lambda: (fleet_cell(app, "supervisor") or "").startswith("alive"), timeout=15,
                    what="tuihost's supervisor alive on the fleet screen")
        assert fleet_cell(app, "desired") == "0" and fleet_cell(app, "live") == "0"
        table = app.screen.query_one("#fleet-table", SyncedTable)
        for _ in range(table.row_count):  # other hosts may be listed: put the cursor on tuihost
            if table.selected_key() == HOST:
                break
            await pilot.press("down")
        assert table.selected_key() == HOST

        await pilot.press("plus", "plus")
        await until(pilot, lambda: fleet_cell(app, "desired") == "2", what="desired 2 on the screen")
        names = live_names(js)
        await until_async(pilot, lambda: _equals(names, {f"{HOST}-1", f"{HOST}-2"}), timeout=20, what="2 live bots")
        await until(pilot, lambda: fleet_cell(app, "live") == "2", what="live 2 on the screen")
        assert fleet_cell(app, "bots") == f"{HOST}-1 {HOST}-2"
        assert fleet_cell(app, "by") == "tester@test"

        await pilot.press("minus", "minus")
        await until(pilot, lambda: fleet_cell(app, "desired") == "0", what="desired 0 on the screen")
        await until_async(pilot, lambda: _equals(names, set()), timeout=20, what="the bots to drain")
        await until(pilot, lambda: fleet_cell(app, "live") == "0", what="live 0 on the screen")

        await pilot.press("minus")  # below 0: refused with a notification, nothing written
        await until(pilot, lambda: any("must be 0-" in str(n.message) for n in app._notifications),
                    what="the refusal notification")
        assert fleet_cell(app, "desired") == "0"


async def test_scale_to_refuses_bad_input_and_accepts_a_number(provisioned, supervisor, js):
    """Given the = input, when the operator types text or a too-large count, then it is refused; a number is written."""
    from corral.core.fleet import MAX_BOTS_PER_HOST, read_desired

    app = CorralApp(Settings(servers=(provisioned.url,)), actor="tester@test")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: (fleet_cell(app, "supervisor") or "").startswith("alive"), what="tuihost listed")
        table = app.screen.query_one("#fleet-table", SyncedTable)
        for _ in range(table.row_count):
            if table.selected_key() == HOST:
                break
            await pilot.press("down")
        for bad, says in (("many", "not a whole number"), (str(MAX_BOTS_PER_HOST + 1), "must be 0-")):
            await pilot.press("equals_sign")
            await until(pilot, lambda: app.screen.query("#scale-count"), what="the scale input")
            await pilot.press(*bad, "enter")
            await until(pilot, lambda says=says: says in str(app.screen.query_one("#scale-error").render()), what=f"refusal of {bad!r}")
            await pilot.press("escape")
        await pilot.press("equals_sign")
        await until(pilot, lambda: app.screen.query("#scale-count"), what="the scale input")
        await pilot.press("0", "enter")  # "0" typed over the selected current value
        await until(pilot, lambda: not app.screen.query("#scale-count"), what="the input to close")
        async def written():
            d = await read_desired(js, HOST)
            return d if d and d.by == "tester@test" else None
        desired = await until_async(pilot, written, what="desired written by the dashboard")
        assert desired.count == 0


async def _equals(check: Callable[[], Awaitable[set[str]]], want: set[str]) -> bool:
    return await check() == want


async def test_the_fleet_screen_opens_and_scale_keys_do_nothing_without_a_server():
    """Given no server at the URL, then the Fleet screen opens, says it is reading, and + only warns."""
    from corral.harness.server import free_port
    from corral.tui.widgets.banner import ConnectionBanner

    app = CorralApp(Settings(servers=(f"nats://127.0.0.1:{free_port()}",)), actor="tester@test")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: "unreachable" in str(app.screen.query_one(ConnectionBanner).render()), what="the banner")
        assert "reading the fleet" in str(app.screen.query_one("#fleet-status").render())
        await pilot.press("plus", "equals_sign")
        await until(pilot, lambda: any("select a fleet host" in str(n.message) for n in app._notifications), what="the warning")
        assert not app.screen.query("#scale-count") and app.is_running


async def test_a_sigkilled_supervised_bot_shows_as_a_restart_with_its_exit_code_and_its_old_incarnation_dead(
        provisioned, supervisor, js):
    """Given a supervised bot on the fleet screen, when it is SIGKILLed, then within 2 s its slot shows 1 restart
    with SIGKILL as the last exit and its old pid listed as a dead incarnation."""
    from corral.core.fleet import write_desired

    app = CorralApp(Settings(servers=(provisioned.url,)), actor="tester@test")
    bot = f"{HOST}-1"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        # after the supervisor is up: it writes its own --count 0 as it starts
        await until(pilot, lambda: (fleet_cell(app, "supervisor") or "").startswith("alive"), what="the supervisor alive")
        await write_desired(js, HOST, 1, "tester@test")
        slots = lambda: app.screen.query_one("#slots-table", SyncedTable)  # noqa: E731
        slot = lambda column: slots().value(bot, column) if bot in slots().rows else None  # noqa: E731
        await until(pilot, lambda: slot("state") == "running" and slot("pid") not in (None, "-")
                    and bot in app.store.bots, timeout=30, what="the slot running with its bot's heartbeat seen")
        old_pid = int(slot("pid") or 0)
        assert slot("restarts") == "0"
        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        await until(pilot, lambda: slot("restarts") == "1" and (slot("last_exit") or "").startswith("SIGKILL")
                    and f"{bot}@{old_pid}" in slots().rows and slots().value(f"{bot}@{old_pid}", "state") == "dead",
                    timeout=10, what="the restart, its exit code and the dead incarnation")
        elapsed = time.monotonic() - killed
        assert elapsed < 2.0, f"the fleet screen took {elapsed:.1f}s to show the kill"
