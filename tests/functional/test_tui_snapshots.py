"""Every dashboard screen at 80x24 and 120x40, as SVG snapshots, from real data.

One real nats-server and one real bot run a fixed set of jobs (fixed ids, one
that dies); a live dashboard reads them. What it read is then replayed into a
still store whose live values are frozen: times moved onto a fixed clock, pids,
incarnations, hosts, CPU, memory, stream bytes, pull counts and durations masked
to constants. A :class:`StillApp` shows that store without connecting, so the
screenshots are the same on every run and a column cut off shows up as a diff.
Update with ``pytest tests/functional/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import msgspec
import pytest

from corral.core.messages import make_job
from corral.core.settings import Settings
from corral.core.submit import submit_many
from corral.harness.procs import BotProcess
from corral.harness.server import EmbeddedServer
from corral.tui import app as app_module
from corral.tui.app import SCREENS, CorralApp
from corral.tui.store import Store
from tests.conftest import provision_sync

BASE = 1_767_225_600.0  #: 2026-01-01 00:00 UTC: every frozen time is counted from here
SIZES = [(80, 24), (120, 40)]
JOBS = [make_job("sum", {"a": i, "b": 2}) for i in range(4)] + [
    make_job("fail", {"message": "upstream 503 from the billing service, retry later"}, max_attempts=1)]
for n, j in enumerate(JOBS):  # fixed ids: the same rows, the same widths, on every run
    JOBS[n] = msgspec.structs.replace(j, id=f"snapjob{n:02d}" + "0" * 24, created_at=BASE)


async def _collect(url: str) -> Store:
    app = CorralApp(Settings(servers=(url,)), actor="tester@test")
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 40
        while not (app.store.dead and any(b.beat.done == 4 for b in app.store.bots.values())
                   and {j.id for j in JOBS} <= set(app.store.jobs)):
            if time.monotonic() > deadline:
                pytest.fail("the dashboard never saw the jobs end")
            await pilot.pause(0.1)
        seen = app.store.snapshot_at
        while app.store.snapshot_at < seen + 1.5:  # a snapshot taken after the last job ended
            if time.monotonic() > deadline:
                pytest.fail("no snapshot after the jobs ended")
            await pilot.pause(0.1)
        return app.store


def freeze(live: Store) -> Store:
    """The same facts on a still clock, live values masked."""
    still = Store(clock=lambda: BASE + 60)
    still.connected, still.connection_detail = True, "connected"
    snap = live.snapshot
    assert snap is not None
    snap = replace(snap, streams=[replace(s, bytes=0) for s in snap.streams],
                   consumers=[replace(c, waiting=0, in_flight=0) for c in snap.consumers],
                   bots=[replace(b, pid=4242, host="host-1", heartbeat_age=0.5) for b in snap.bots])
    for bot_row in live.bots.values():
        b = bot_row.beat
        still.beat(msgspec.structs.replace(b, pid=4242, host="host-1", incarnation="inc-1", started_at=BASE, heartbeat_at=BASE + 59.5,
                                           version="0.0.0", cpu_seconds=1.5, cpu_percent=2.0, rss_bytes=64 << 20, current=[]))
    for n, row in enumerate(sorted(live.events, key=lambda r: (r.event.job_id or "", str(r.event.type), r.event.attempt or 0))):
        e = msgspec.structs.replace(row.event, ts=BASE + n * 0.25, duration=0.001 if row.event.duration else row.event.duration,
                                    incarnation="inc-1" if row.event.incarnation else row.event.incarnation)
        still.add_event(row.subject, e)
    still.set_dead([replace(d, dead_at=BASE + 1, bots="b1") for d in live.dead])
    still.take_snapshot(snap, BASE + 59)
    return still


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> Iterator[Store]:
    home = tmp_path_factory.mktemp("snap")
    server = EmbeddedServer(Path(home) / "nats").start()
    bot = None
    try:
        provision_sync(server.url)
        bot = BotProcess(server.url, "b1", Path(home))

        async def run() -> Store:
            import nats
            nc = await nats.connect(server.url)
            await submit_many(nc.jetstream(), JOBS)
            await nc.close()
            return await _collect(server.url)
        yield freeze(anyio.run(run))
    finally:
        if bot is not None:
            bot.close()
        server.kill()


class StillApp(CorralApp):
    """The dashboard over a still store: no connection, no clock, so nothing changes under the camera."""

    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # a subclass resolves it beside its own module

    def __init__(self, store: Store) -> None:
        super().__init__(Settings(servers=("nats://127.0.0.1:4222",)), actor="tester@test")
        self.store = store

    def on_mount(self) -> None:
        pass


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", list(SCREENS))
def test_every_screen_renders_the_same_at_each_size(snap_compare, frozen, mode, size):
    """Given real data frozen on a still clock, when a screen is shown at 80x24 or 120x40, then it matches its committed snapshot."""
    assert snap_compare(StillApp(frozen), press=[str(list(SCREENS).index(mode) + 1), "_"], terminal_size=size)
