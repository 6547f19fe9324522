"""What the Features screen shows, read from NATS in one pass (the body of the ``features`` feed).

Schedules with their next firing, the fan-in groups a member finished in
lately, the leased locks held now, and the fleet-wide limits per kind with
their usage. All reads are direct gets (no consumer), so a dashboard never
disturbs the bots.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field

from nats.js import JetStreamContext

from corral.core import fairness, groups, leases, limits, locks
from corral.core.errors import MissingResourceError
from corral.core.history import walk
from corral.core.names import SCHEDULES_STREAM, firing_subject, kv_stream, kv_subject
from corral.core.schedules import Schedule, list_schedules

FIRINGS_WINDOW = 200  #: latest CORRAL_SCHEDULES messages read for the next firing of each schedule
TERMINAL = {"succeeded"}  #: a callback state that never changes again (a dead one may be replayed)
_TTL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_EVERY = re.compile(r"^@every (\d+)(ms|s|m|h)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class ScheduleRow:
    schedule: Schedule
    next_at: float | None  #: Unix seconds of the next firing as last read; None when not known yet

    def upcoming(self, now: float) -> float | None:
        """The next firing after ``now``: an ``@every`` schedule's passed firing is carried forward by
        whole periods (reads are seconds apart); other specs' passed firings stay as read (\"due\")."""
        m = _EVERY.match(self.schedule.spec)
        if self.next_at is None or self.next_at > now or not m:
            return self.next_at
        period = float(m.group(1)) * _UNIT[m.group(2)]
        return self.next_at + math.ceil((now - self.next_at) / period) * period if period > 0 else self.next_at


@dataclass(frozen=True)
class GroupRow:
    group: str
    done: int  #: distinct members finished
    size: int | None  #: None when no finished member's job could be read back
    callback_kind: str | None
    callback_state: str  #: :func:`corral.core.groups.callback_state`: waiting, pending, or the callback's latest event


@dataclass(frozen=True)
class LockRow:
    name: str
    owner: str  #: ``<bot>/<job id>`` for a handler's ``ctx.lock``
    since: float | None  #: Unix seconds the holder took it
    expires_at: float | None  #: Unix seconds the lease runs out unless renewed (server clock)


@dataclass(frozen=True)
class Features:
    schedules: list[ScheduleRow] = field(default_factory=list)
    groups: list[GroupRow] = field(default_factory=list)
    locks: list[LockRow] = field(default_factory=list)
    limits: list[limits.LimitStatus] = field(default_factory=list)
    #: Jobs waiting per fairness key (core/fairness.py); empty when none wait.
    fair_waiting: dict[str, int] = field(default_factory=dict)


def parse_time(text: str) -> float | None:
    """Unix seconds of an RFC3339 UTC time such as ``2026-11-23T18:00:00Z`` (None if not one)."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_ttl(text: str | None) -> float | None:
    """Seconds of a ``Nats-TTL`` header (``3000ms``, ``30s``, ``1h``, or plain seconds)."""
    m = _TTL.match((text or "").strip())
    return float(m.group(1)) * _UNIT[m.group(2)] if m else None


async def next_firings(js: JetStreamContext) -> dict[str, float]:
    """Schedule name -> its next firing, from the ``Nats-Schedule-Next`` header of its latest firing
    among the stream's last :data:`FIRINGS_WINDOW` messages.

    The server stamps each firing with the time of the one after it; a schedule that has not fired
    yet (or not within the window) is absent. A schedule replaced under the same name shows the old
    one's next firing until the new one first fires.
    """
    info = await js.stream_info(SCHEDULES_STREAM)
    start = max(info.state.last_seq - FIRINGS_WINDOW + 1, 1)
    out: dict[str, float] = {}
    async for msg in walk(js, SCHEDULES_STREAM, firing_subject("*", "*"), start_seq=start, limit=FIRINGS_WINDOW):
        h = msg.headers or {}
        scheduler, when = h.get("Nats-Scheduler", ""), parse_time(h.get("Nats-Schedule-Next", ""))
        if scheduler and when is not None:
            out[scheduler.rsplit(".", 1)[-1]] = when
    return out


async def held_locks(js: JetStreamContext) -> list[LockRow]:
    """Every lock in the locks bucket that is held now (released ones are tombstones, lapsed ones markers)."""
    out = []
    async for msg in walk(js, kv_stream(locks.BUCKET), kv_subject(locks.BUCKET, ">")):
        if not msg.data or leases.is_gone(msg):
            continue
        h = msg.headers or {}
        try:
            body = json.loads(msg.data)
        except ValueError:
            body = {}
        ttl = parse_ttl(h.get("Nats-TTL"))
        stored = msg.time.timestamp() if msg.time else None
        out.append(LockRow((msg.subject or "").rsplit(".", 1)[-1], str(body.get("owner", "?")), body.get("since"),
                           stored + ttl if stored is not None and ttl is not None else None))
    return out


async def fair_waiting(js: JetStreamContext) -> dict[str, int]:
    """Jobs waiting per fairness key; empty on a store without the fair stream (not provisioned yet)."""
    try:
        return fairness.by_key(await fairness.waiting(js._nc))
    except MissingResourceError:
        return {}


class FeaturesReader:
    """Reads :class:`Features`; remembers what never changes between reads (a group's size and
    callback, a callback that ended) so a poll every few seconds stays a few requests per group."""

    def __init__(self) -> None:
        self._shapes: dict[str, groups.GroupShape] = {}
        self._ended: dict[str, str] = {}

    async def read(self, js: JetStreamContext) -> Features:
        firings = await next_firings(js)
        rows = [ScheduleRow(s, self._next(s, firings)) for s in await list_schedules(js)]
        return Features(schedules=rows, groups=await self._groups(js), locks=await held_locks(js),
                        limits=await limits.list_limits(js), fair_waiting=await fair_waiting(js))

    @staticmethod
    def _next(s: Schedule, firings: dict[str, float]) -> float | None:
        if s.spec.startswith("@at "):
            return parse_time(s.spec[4:])
        return firings.get(s.name)

    async def _groups(self, js: JetStreamContext) -> list[GroupRow]:
        recent = await groups.recent_groups(js)
        for gone in set(self._shapes) - set(recent):
            self._shapes.pop(gone, None)
            self._ended.pop(gone, None)
        rows = []
        for group, seen in recent.items():
            done = await groups.finished_count(js, group)
            shape = self._shapes.get(group) or await groups.read_shape(js, group, seen, scan_pending=False)
            if shape is not None:
                self._shapes[group] = shape
            size = shape.size if shape else None
            # no search of the waiting jobs every two seconds: a callback's running first delivery shows as pending here
            state = self._ended.get(group) or await groups.callback_state(js, group, done, size, scan_pending=False)
            if state in TERMINAL:
                self._ended[group] = state
            rows.append(GroupRow(group, done, size, shape.callback.kind if shape else None, state))
        return rows
