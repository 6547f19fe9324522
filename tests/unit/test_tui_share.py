"""The bots screen's share of recent work, computed from heartbeat counters in the store."""

from __future__ import annotations

from corral.core.messages import BotHeartbeat
from corral.tui.store import Store


def beat(name: str, at: float, done: int, incarnation: str = "i1") -> BotHeartbeat:
    return BotHeartbeat(name=name, incarnation=incarnation, host="h", pid=1, state="ready", version="0", started_at=0.0,
                        heartbeat_at=at, done=done)


def test_a_bot_that_took_a_whole_burst_shows_all_the_share_and_an_idle_one_none():
    """Given two bots' heartbeats over 90 s, when b1's done counter rose by 100 in the last minute, then b1 has
    100 and 100% and b2 0 and 0%."""
    now = 1000.0
    store = Store(clock=lambda: now)
    for t in range(0, 91, 5):
        store.beat(beat("b1", now - 90 + t, 7 if t <= 30 else 107))
        store.beat(beat("b2", now - 90 + t, 3))
    assert store.work_shares() == {"b1": (100, 100.0), "b2": (0, 0.0)}


def test_a_restarted_bot_counts_from_its_new_incarnation():
    """Given a bot with 50 done, when a new incarnation under its name beats with 2 done, then its recent work is 0,
    never negative."""
    store = Store(clock=lambda: 100.0)
    store.beat(beat("b1", 10.0, 50))
    store.beat(beat("b1", 20.0, 2, incarnation="i2"))
    store.beat(beat("b1", 25.0, 2, incarnation="i2"))
    assert store.recent_done("b1") == 0
