"""Following ``desired.<host>``: the count ``corral scale`` sets and a supervisor obeys.

A KV watch on the one key, rebuilt after a reconnect: nats-py's ordered-consumer
watch can take about 17 s to notice a server restart on its own (a missed idle
heartbeat), and until then a new count would go unseen. The supervisor's
reconnect callback calls :meth:`DesiredWatch.restart`, which cancels the watch
so that the loop starts a fresh one at once.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from corral.bots.fleet_keys import FLEET_BUCKET, MAX_BOTS_PER_HOST, decode_desired, desired_key
from corral.core.connect import TRANSIENT
from corral.core.log import Logger

#: Seconds before a failed watch is retried when no reconnect comes first.
RETRY_AFTER = 5.0


def clamp(count: int) -> int:
    """A hand-written value out of range is clamped, not obeyed."""
    return max(0, min(count, MAX_BOTS_PER_HOST))


class DesiredWatch:
    """Calls ``on_change(count, by)`` with the key's value now and on every change.

    A deleted or purged key means 0. A value that does not decode is logged and ignored.
    """

    def __init__(self, js: JetStreamContext, host: str, on_change: Callable[[int, str], None], log: Logger) -> None:
        self.js = js
        self.host = host
        self.on_change = on_change
        self.log = log
        self._scope: anyio.CancelScope | None = None

    def restart(self) -> None:
        """Drop the current watch and start another (after a reconnect)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Watch until cancelled, restarting after failures and on :meth:`restart`."""
        while True:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    await self._follow()
                except (*TRANSIENT, nats.js.errors.APIError) as e:
                    self.log.warning("fleet.watch_failed", error=str(e) or type(e).__name__, hint="retrying on reconnect or in 5s")
                    await anyio.sleep(RETRY_AFTER)  # cancelled early by a reconnect

    async def _follow(self) -> None:
        kv = await self.js.key_value(FLEET_BUCKET)
        watcher = await kv.watch(desired_key(self.host))
        try:
            async for entry in watcher:
                if entry is None:
                    continue  # end of the initial values
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.on_change(0, "deleted")
                    continue
                desired = decode_desired(entry.value)
                if desired is None:
                    self.log.warning("fleet.desired_invalid", value=entry.value[:100])
                    continue
                self.on_change(clamp(desired.count), desired.by)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await watcher.stop()
                except (*TRANSIENT, nats.errors.Error):
                    pass  # the connection is gone; so is the subscription
