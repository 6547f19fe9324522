"""Finding hung bots: a process that runs but whose liveness key stays missing.

A bot refreshes ``$KV.corral_bots.<name>`` every TTL/3. One whose process is
alive but whose key has been missing (or names another pid) for over 2 TTL is
stuck, and its slot kills it; it then restarts like any crash. A bot not yet seen since it
started gets ``STARTUP_GRACE`` instead: it may still be importing and connecting.

What this check does *not* do while the supervisor's own connection to NATS is
down: judge any bot hung. A missing key then says more about the supervisor's
link than about the bot, and killing healthy bots in a network partition would
turn a blip into an outage.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from corral.bots.fleet_slot import Slot, SlotState
from corral.core import leases
from corral.core.connect import TRANSIENT
from corral.core.jsapi import api
from corral.core.log import Logger
from corral.core.messages import BotHeartbeat, heartbeat_decoder
from corral.core.names import BOTS_BUCKET


#: Seconds a started bot gets to register its key before its silence counts as hung.
STARTUP_GRACE = 30.0


class HungCheck:
    """One look at the running slots per :meth:`check`; kills those silent for over ``hung_after`` seconds."""

    def __init__(self, nc: NATS, hung_after: float, log: Logger) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.hung_after = hung_after
        self.log = log
        self._blind = False  #: the last check could not see NATS

    async def check(self, slots: Iterable[Slot]) -> None:
        running = [s for s in slots if s.state == SlotState.RUNNING and s.pid]
        if not running:
            return
        try:
            entries = {s.name: await self.bot_entry(s.name) for s in running} if await self.link_ok() else None
        except (*TRANSIENT, nats.errors.Error):
            entries = None
        if entries is None:
            # Our own link is down: we cannot tell a hung bot from a partition. Restart nothing.
            self.log.warning("fleet.hung_check_skipped", reason="supervisor not connected to NATS; restarting nothing")
            self._blind = True
            return
        now = anyio.current_time()  # after the reads, which may have waited on a slow server
        if self._blind:
            # The first look after a blind spell: start every bot's clock now, so each gets a
            # full 2 TTL to re-register (its own heartbeat may still be timing out).
            self._blind = False
            for s in running:
                s.last_seen = now
        for s in running:
            self._judge(s, entries[s.name], now)

    def _judge(self, s: Slot, entry: BotHeartbeat | None, now: float) -> None:
        # A bot not seen since it started is still importing, connecting and claiming its name,
        # which takes longer than 2 TTL on a loaded machine: killing it then is a restart loop.
        limit = self.hung_after if s.last_seen > s.started else max(self.hung_after, STARTUP_GRACE)
        if entry is not None and entry.pid == s.pid:
            s.last_seen = now
        elif now - s.last_seen > limit and s.state == SlotState.RUNNING:
            self.log.error("fleet.hung", slot=s.number, bot=s.name, pid=s.pid, silent=round(now - s.last_seen, 1))
            s.kill_hung()

    async def link_ok(self) -> bool:
        """Whether JetStream answers us right now (a round trip, not just the socket state).

        Not ``nc.flush(timeout)``: in nats-py 2.16 a flush that times out leaves its
        cancelled future queued, and the late PONG then crashes the read loop.
        """
        if not self.nc.is_connected:
            return False
        try:
            await api(self.nc, "INFO", timeout=2)
        except (*TRANSIENT, nats.js.errors.APIError):
            return False
        return True

    async def bot_entry(self, name: str) -> BotHeartbeat | None:
        """The bot's live heartbeat, or None when its key is absent, deleted or expired."""
        # From the leader: a replica catching up after a partition shows old entries (another
        # pid), and this read decides whether a process is killed.
        msg = await leases.read(self.js, BOTS_BUCKET, name, leader=True)
        if msg is None or leases.is_gone(msg) or not msg.data:
            return None
        try:
            return heartbeat_decoder.decode(msg.data)
        except ValueError:
            return None
