"""The reconnect-safe KV watch (core/watch.py) against a real server that is killed and restarted."""

from __future__ import annotations

import time

import anyio
import pytest

from corral.core.connect import connect
from corral.core.log import Logger
from corral.core.names import FLEET_BUCKET, fleet_key_subject
from corral.core.settings import Settings
from corral.core.watch import KVWatch
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

#: Seconds a value written after the restart may take to reach the watcher. nats-py's own
#: watch noticed a restart only after about 17 s (docs/nats-notes.md#kv-watches-across-reconnects).
SEEN_WITHIN = 10.0


async def test_a_kv_watch_sees_a_value_written_after_the_server_restarts(provisioned, tmp_path):
    """Given a KVWatch restarted from the reconnect callback, when the server is killed and restarted on its store
    and a key is written, then the watcher sees the new value within SEEN_WITHIN seconds."""
    seen: list[bytes] = []
    holder: dict[str, KVWatch] = {}

    async def reconnected() -> None:
        holder["watch"].restart()

    log = Logger("test", stream=open(tmp_path / "watch.log", "w"))  # noqa: ASYNC230 - a local file, opened once before any I/O
    nc = await connect(Settings(servers=(provisioned.url,)), log, on_reconnect=reconnected)
    js = nc.jetstream()
    watch = holder["watch"] = KVWatch(js, FLEET_BUCKET, "desired.w1", lambda e: seen.append(e.value or b""), log)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            await js.publish(fleet_key_subject("desired.w1"), b"before")
            await eventually(lambda: _async(b"before" in seen), what="the value written before the restart")

            await anyio.to_thread.run_sync(provisioned.kill)
            await anyio.to_thread.run_sync(provisioned.start)
            await eventually(lambda: _async(nc.is_connected), timeout=30, what="the client to reconnect")

            await js.publish(fleet_key_subject("desired.w1"), b"after", timeout=10)
            written = time.monotonic()
            await eventually(lambda: _async(b"after" in seen), timeout=SEEN_WITHIN, what="the value written after the restart")
            assert time.monotonic() - written < SEEN_WITHIN
            assert watch.restarts >= 1
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


async def _async(value):
    return value
