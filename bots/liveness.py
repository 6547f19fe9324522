"""A bot's name and liveness in the ``corral_bots`` KV bucket.

The key ``$KV.corral_bots.<name>`` is written with :mod:`corral.core.leases`'
compare-and-set with a TTL (the key expires unless refreshed; nats-py's ``kv.put``
and ``kv.update`` cannot send a TTL). On top of that primitive this module gives:

* **Unique names.** Claiming writes with the expected sequence of the key's
  tombstone (or 0 if the key never existed): exactly one claimant wins.
* **Reclaim after a crash, without an operator.** A restarted bot whose old
  entry names the same host and a pid that no longer runs takes the name over
  at once (CAS on that entry). From another host it waits for the old key to
  expire (at most the TTL), then claims it. If the old entry keeps being
  refreshed meanwhile, its holder is alive and the claim is refused.
* **No stale writer.** A frozen bot whose key expired and was claimed by
  another incarnation finds its next heartbeat refused (wrong last sequence)
  and stops rather than fight over the name. If the key merely expired and
  nobody claimed it, the bot re-registers and carries on.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Protocol

import anyio
import msgspec
import nats.js.errors
import psutil
from nats.js import JetStreamContext

from corral.core import leases
from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError, NameTakenError, TransportError
from corral.core.leases import is_gone
from corral.core.log import Logger
from corral.core.messages import encode, heartbeat_decoder
from corral.core.names import BOTS_STREAM, bot_key_subject


#: Read-and-write rounds a refused refresh gets before the name counts as lost.
REWRITE_TRIES = 3


class NameLostError(CorralError):
    """Raised when another incarnation now holds this bot's name (our key expired while we were away)."""


class Beat(Protocol):
    """What a liveness key holds, as far as claiming it goes: whose it is and where that process runs.

    A bot's :class:`corral.core.messages.BotHeartbeat`, and the fleet supervisor's beat (bots/fleet_liveness.py).
    """

    incarnation: str
    host: str
    pid: int


class Liveness:
    """Claims, refreshes and releases one bot's key. Not safe for concurrent writers."""

    def __init__(self, js: JetStreamContext, name: str, ttl: float, log: Logger) -> None:
        self.js = js
        self.name = name
        self.ttl = ttl
        self.log = log
        self.subject = bot_key_subject(name)
        self.seq = 0
        self.incarnation = ""

    async def _last(self):
        # From the leader: every read here decides a compare-and-set, and a replica still
        # catching up after a partition would show our own old entry as the latest.
        return await leases.read_subject(self.js, BOTS_STREAM, self.subject, leader=True)

    async def _write(self, data: bytes, expected: int, extra: dict[str, str] | None = None) -> int | None:
        """Compare-and-set the key (with the TTL, unless ``extra`` makes it a delete); None if refused."""
        return await leases.publish_if(self.js, self.subject, data, expected, None if extra else self.ttl, extra)

    async def claim(self, beat: Beat, poll: float = 0.5) -> None:
        """Take the name, waiting at most about 1.5 TTL for a dead holder's key to expire.

        Raises:
            NameTakenError: a live bot holds the name.
        """
        self.incarnation = beat.incarnation
        deadline = time.monotonic() + self.ttl * 1.5 + 1
        watched_seq = None
        while True:
            last = await self._last()
            expected = 0 if last is None else last.seq
            if last is not None and not is_gone(last):
                holder = self._decode(last.data)
                if holder is None or not self._holder_is_dead(holder):
                    if holder is not None and holder.host == socket.gethostname():
                        raise NameTakenError(self._taken(holder))
                    if watched_seq is not None and watched_seq != last.seq:
                        raise NameTakenError(self._taken(holder))
                    if time.monotonic() > deadline:
                        raise NameTakenError(self._taken(holder))
                    watched_seq = last.seq
                    self.log.info("name.waiting", name=self.name, holder=getattr(holder, "incarnation", "?"),
                                  hint="waiting for the old key to expire")
                    await anyio.sleep(poll)
                    continue
                self.log.info("name.reclaimed", name=self.name, previous=holder.incarnation, previous_pid=holder.pid)
            seq = await self._write(encode(beat), expected)
            if seq is not None:
                self.seq = seq
                return
            # Another claimant wrote first; look again.

    @staticmethod
    def _decode(data: bytes | None) -> Beat | None:
        try:
            return heartbeat_decoder.decode(data or b"")
        except msgspec.DecodeError:
            return None

    @staticmethod
    def _holder_is_dead(holder: Beat | None) -> bool:
        """Only provable on our own host: the recorded pid no longer runs."""
        if holder is None or holder.host != socket.gethostname():
            return False
        # Our own pid in the old entry means a previous incarnation (a container restarted
        # with the same hostname and pid): that process is gone.
        return holder.pid == os.getpid() or not psutil.pid_exists(holder.pid)

    def _taken(self, holder: Beat | None) -> str:
        if holder is None:
            return f"bot name {self.name!r} is held by a live entry"
        return (
            f"bot name {self.name!r} is held by a live bot (pid {holder.pid} on {holder.host}, "
            f"incarnation {holder.incarnation}); stop it or pick another --name"
        )

    async def beat(self, beat: Beat) -> None:
        """Refresh the key (and its TTL) with the current heartbeat.

        Raises:
            NameLostError: another incarnation holds the name now.
            TransportError: the server did not answer.
        """
        try:
            seq = await self._write(encode(beat), self.seq)
            if seq is None:
                seq = await self._rewrite(beat)
        except TRANSIENT as e:
            raise TransportError(f"heartbeat for {self.name} not acknowledged") from e
        self.seq = seq

    async def _rewrite(self, beat: Beat) -> int:
        """The refresh found the key rewritten: take it back if it is free or still ours.

        A refusal after the re-read means the key moved in between (a write of ours that
        timed out landing late, the server's expiry marker); that is looked at again, a few
        times, before the name is given up: giving it up stops the bot (or a whole fleet).

        Raises:
            NameLostError: another incarnation holds the name now.
        """
        for _ in range(REWRITE_TRIES):
            last = await self._last()
            if last is None or is_gone(last):
                # Our key expired while we were frozen or cut off, and nobody took the name: take it back.
                self.log.warning("name.reregistered", name=self.name, hint="liveness key had expired")
            else:
                holder = self._decode(last.data)
                if holder is None or holder.incarnation != self.incarnation:
                    raise NameLostError(f"bot name {self.name!r} was taken over while this bot was unreachable")
                # Still ours: our previous write landed but its ack was lost.
            seq = await self._write(encode(beat), 0 if last is None else last.seq)
            if seq is not None:
                return seq
            self.log.info("name.rewrite_refused", name=self.name, seen=0 if last is None else last.seq)
        raise NameLostError(f"bot name {self.name!r} kept being rewritten by another writer during the refresh")

    async def release(self) -> None:
        """Delete the key (watchers see a DEL) unless someone else holds it by now."""
        try:
            await self._write(b"", self.seq, leases.DELETE)
        except (nats.js.errors.APIError, *TRANSIENT) as e:
            self.log.warning("name.release_failed", name=self.name, error=str(e) or type(e).__name__)
