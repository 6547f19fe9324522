"""Following ``desired.<host>``: the count ``corral scale`` sets and a supervisor obeys.

A :class:`~corral.core.watch.KVWatch` on the one key: the supervisor's reconnect
callback calls :meth:`DesiredWatch.restart`, so a new count is seen at once after
a server restart rather than when nats-py's watch notices it by itself
(docs/nats-notes.md#kv-watches-across-reconnects).
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from corral.core.fleet import FLEET_BUCKET, MAX_BOTS_PER_HOST, decode_desired, desired_key
from corral.core.leases import is_gone
from corral.core.log import Logger
from corral.core.watch import KVWatch


def clamp(count: int) -> int:
    """A hand-written value out of range is clamped, not obeyed."""
    return max(0, min(count, MAX_BOTS_PER_HOST))


class DesiredWatch:
    """Calls ``on_change(count, by)`` with the key's value now and on every change.

    A deleted or purged key means 0. A value that does not decode is logged and ignored.
    """

    def __init__(self, js: JetStreamContext, host: str, on_change: Callable[[int, str], None], log: Logger) -> None:
        self.host = host
        self.on_change = on_change
        self.log = log
        self._watch = KVWatch(js, FLEET_BUCKET, desired_key(host), self._entry, log)

    def restart(self) -> None:
        """Drop the current watch and start another (after a reconnect)."""
        self._watch.restart()

    async def run(self) -> None:
        """Watch until cancelled, restarting after failures and on :meth:`restart`."""
        await self._watch.run()

    def _entry(self, entry: KeyValue.Entry) -> None:
        if is_gone(entry) or not entry.value:
            self.on_change(0, "deleted")
            return
        desired = decode_desired(entry.value)
        if desired is None:
            self.log.warning("fleet.desired_invalid", value=entry.value[:100])
            return
        self.on_change(clamp(desired.count), desired.by)
