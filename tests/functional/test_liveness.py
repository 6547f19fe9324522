"""A bot's name in ``corral_bots`` across an absence: real nats-server, real TTL expiry, no sleeps.

A partition is played on one server by letting the key's TTL run out while the holder does not
beat, which is what the majority side does to a cut-off bot's key. A replica still catching up
after the heal is played by handing the refresh one stale read, the entry such a replica returns.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from corral.bots.liveness import Liveness, NameLostError
from corral.core import leases
from corral.core.log import Logger
from corral.core.messages import BotHeartbeat, heartbeat_decoder, new_id
from corral.core.names import BOTS_STREAM, bot_key_subject
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

TTL = 1.0  #: the shortest TTL the server honours; it expires keys on a roughly 1 s tick


def beat(name: str, incarnation: str) -> BotHeartbeat:
    now = time.time()
    return BotHeartbeat(name=name, incarnation=incarnation, host=socket.gethostname(), pid=os.getpid(),
                        state="ready", version="test", started_at=now, heartbeat_at=now)


class StaleOnce(Liveness):
    """Liveness whose next read returns ``stale`` once, as a lagging replica would, then reads for real."""

    stale = None

    async def _last(self):
        if self.stale is not None:
            msg, self.stale = self.stale, None
            return msg
        return await super()._last()


async def claimed(js, cls=Liveness, name: str = "b-1") -> tuple[Liveness, BotHeartbeat]:
    live = cls(js, name, TTL, Logger("test"))
    mine = beat(name, new_id()[:12])
    await live.claim(mine)
    return live, mine


async def expired(js, name: str) -> None:
    async def gone() -> bool:
        last = await leases.read_subject(js, BOTS_STREAM, bot_key_subject(name), leader=True)
        return last is None or leases.is_gone(last)
    await eventually(gone, timeout=15, interval=0.1, what=f"{name}'s key to expire")


async def holder(js, name: str) -> str:
    last = await leases.read_subject(js, BOTS_STREAM, bot_key_subject(name), leader=True)
    assert last is not None and not leases.is_gone(last)
    return heartbeat_decoder.decode(last.data or b"").incarnation


async def test_a_bot_whose_key_expired_while_it_was_away_takes_its_name_back_on_the_next_beat(js):
    """Given a claimed name whose key expired unrefreshed, when the bot beats again, then it holds the name again."""
    live, mine = await claimed(js)
    await expired(js, "b-1")
    await live.beat(mine)
    assert await holder(js, "b-1") == mine.incarnation
    await live.beat(mine)  # and the refresh after that is an ordinary compare-and-set
    assert await holder(js, "b-1") == mine.incarnation


async def test_a_refresh_that_first_reads_a_stale_copy_of_its_own_entry_looks_again_and_keeps_the_name(js):
    """Given an expired key and a first read returning the bot's old entry, when it beats, then it re-registers instead of giving up."""
    live, mine = await claimed(js, StaleOnce)
    old = await leases.read_subject(js, BOTS_STREAM, bot_key_subject("b-1"), leader=True)
    await expired(js, "b-1")
    live.stale = old
    await live.beat(mine)
    assert await holder(js, "b-1") == mine.incarnation


async def test_a_name_another_incarnation_took_while_the_bot_was_away_is_lost(js):
    """Given a bot's expired name claimed by a new incarnation, when the old bot beats, then NameLostError stops it."""
    old_live, old_beat = await claimed(js)
    await expired(js, "b-1")
    _, new_beat = await claimed(js)
    with pytest.raises(NameLostError):
        await old_live.beat(old_beat)
    assert await holder(js, "b-1") == new_beat.incarnation


async def test_a_leader_read_and_a_direct_read_of_a_key_agree_on_a_quiet_server(js):
    """Given a claimed name, when it is read from the leader and directly, then both return the same entry."""
    await claimed(js)
    subject = bot_key_subject("b-1")
    by_leader = await leases.read_subject(js, BOTS_STREAM, subject, leader=True)
    direct = await leases.read_subject(js, BOTS_STREAM, subject)
    assert by_leader is not None and direct is not None
    assert (by_leader.seq, by_leader.data) == (direct.seq, direct.data)
    assert await leases.read_subject(js, BOTS_STREAM, bot_key_subject("never-claimed"), leader=True) is None
