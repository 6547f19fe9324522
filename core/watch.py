"""A KV watch that survives reconnects: the one way corral follows a bucket.

nats-py's ``kv.watch()`` runs on an ordered push consumer that notices a server
restart only when its idle heartbeats go missing, which took about 17 s in our
runs and sometimes never (docs/nats-notes.md#kv-watches-across-reconnects). Until
then a new value goes unseen. So a watch is never trusted across a reconnect:
the owner's reconnect callback calls :meth:`KVWatch.restart`, which cancels the
current watch, and :meth:`KVWatch.run` starts a fresh one at once (a fresh
watch delivers every key's current value first, so nothing written meanwhile is
missed). A watch that fails (no bucket yet, no answer) is retried after
:data:`RETRY_AFTER` seconds, or sooner on a reconnect.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from corral.core.connect import TRANSIENT
from corral.core.log import Logger

#: Seconds before a failed watch is retried when no reconnect comes first.
RETRY_AFTER = 5.0
#: Seconds a stopping watch may take to unsubscribe (the connection may be gone).
STOP_TIMEOUT = 2.0

OnEntry = Callable[[KeyValue.Entry], None]


class KVWatch:
    """Calls ``on_entry(entry)`` for every current value of ``key`` in ``bucket``, then for every change.

    ``key`` may hold wildcards; ``">"`` follows the whole bucket. Entries include
    deletes and purges (ask :func:`corral.core.leases.is_gone`). After a restart the
    current values are delivered again, so ``on_entry`` must be idempotent.
    ``on_ready``, if given, is called each time the initial values have all arrived.
    """

    def __init__(self, js: JetStreamContext, bucket: str, key: str, on_entry: OnEntry, log: Logger, *,
                 on_ready: Callable[[], None] | None = None, retry_after: float = RETRY_AFTER) -> None:
        self.js = js
        self.bucket = bucket
        self.key = key
        self.on_entry = on_entry
        self.on_ready = on_ready
        self.log = log
        self.retry_after = retry_after
        self.restarts = 0  #: watches started after the first (reconnects and failures)
        self._scope: anyio.CancelScope | None = None

    def restart(self) -> None:
        """Drop the current watch and start another (call it from the reconnect callback)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Watch until cancelled, restarting after failures and on :meth:`restart`."""
        first = True
        while True:
            if not first:
                self.restarts += 1
            first = False
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    await self._follow()
                    error = "the watch ended"
                except (*TRANSIENT, nats.js.errors.Error, nats.errors.Error) as e:
                    error = str(e) or type(e).__name__
                self.log.warning("kv.watch_failed", bucket=self.bucket, key=self.key, error=error,
                                 hint=f"retrying on reconnect or in {self.retry_after:g}s")
                await anyio.sleep(self.retry_after)  # cancelled early by a reconnect

    async def _follow(self) -> None:
        kv = await self.js.key_value(self.bucket)
        watcher = await kv.watch(self.key)
        try:
            async for entry in watcher:
                if entry is None:  # the end of the initial values
                    if self.on_ready is not None:
                        self.on_ready()
                    continue
                self.on_entry(entry)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT):
                try:
                    await watcher.stop()
                except (*TRANSIENT, nats.errors.Error, nats.js.errors.Error):
                    pass  # the connection is gone; so is the subscription
