"""One bot at a time moves fair jobs into the jobs stream, in turn over the keys, behind a lease.

Jobs with a fairness key wait on ``corral.fair.<queue>.<priority>.<key>`` (core/fairness.py).
Every bot runs this loop; the KV key ``$KV.corral_locks.corral.fair.dispatch`` (:data:`DISPATCH_KEY`,
a :mod:`corral.core.leases` key with a TTL) decides which one dispatches, as for the purge
(bots/purger.py): another bot takes over within about ``LEASE_TTL`` seconds of the holder dying.

Each tick, per queue and priority with fair work:

1. **Room**: the work consumer's ``num_pending`` (stored, not yet delivered to any bot) is the
   dispatched-but-unstarted window. Only ``window - num_pending`` jobs are moved, so the jobs
   stream never holds a long line of one key: a new key's first job waits about one window.
2. **Order**: :class:`Rotation` deals the room out round robin over the keys with work, a key
   getting ``weight`` starts per turn; a capped key gets no more than its free cap slots.
3. **Move**: each key's next jobs are read with one batched direct get (``next_by_subj`` from the
   key's cursor), republished to ``corral.jobs.<queue>.<priority>`` with the job's own
   ``Nats-Msg-Id``, and once every publish is acknowledged the key's subject is purged up to the
   last one moved. A dispatcher that dies between the two re-moves the same jobs on the next term,
   and the jobs stream's duplicate window (10 minutes) drops the copies: no job is lost or doubled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from corral.core import fairness, leases
from corral.core.errors import CorralError, MissingResourceError
from corral.core.jsapi import api
from corral.core.log import Logger
from corral.core.names import (
    FAIR_STREAM, JOBS_STREAM, LOCKS_BUCKET, api_subject, consumer_name, consumer_op, fair_subject, job_subject,
    parse_fair_subject, stream_op,
)
from corral.core.publisher import AsyncPublisher

DISPATCH_KEY = "corral.fair.dispatch"  #: in the corral_locks bucket; documented in docs/resources.md
LEASE_TTL = 10.0
#: Dispatched-but-unstarted jobs kept ahead of the bots, per queue and priority.
WINDOW = 64
#: Seconds between ticks that found nothing to move (a tick that moved something is followed at once).
IDLE = 0.05
#: Seconds a capped key's dispatch is counted against its cap before its bot's slot shows it.
RECENT = 0.5
ACK_TIMEOUT = 10.0


class Rotation:
    """Round robin over keys, a key getting ``weight`` picks per turn; the turn survives ticks."""

    def __init__(self) -> None:
        self.order: deque[str] = deque()
        self.credit = 0  #: picks the key at the front has had this turn

    def deal(self, available: dict[str, int], weights: dict[str, int], n: int) -> list[str]:
        """Up to ``n`` keys in start order, each at most ``available[key]`` times."""
        live = set(k for k, c in available.items() if c > 0)
        if any(k not in live for k in self.order):
            front = self.order[0] if self.order else None
            self.order = deque(k for k in self.order if k in live)
            if not self.order or self.order[0] != front:
                self.credit = 0
        self.order.extend(sorted(live.difference(self.order)))  # a new key joins at the end of the round
        left = dict(available)
        picks: list[str] = []
        while len(picks) < n and self.order:
            key = self.order[0]
            if left.get(key, 0) > 0 and self.credit < weights.get(key, 1):
                picks.append(key)
                left[key] -= 1
                self.credit += 1
                continue
            self.order.rotate(-1)
            self.credit = 0
            if left.get(key, 0) <= 0 and all(left.get(k, 0) <= 0 for k in self.order):
                break
        return picks


class Dispatcher:
    def __init__(self, nc: NATS, js: JetStreamContext, log: Logger, owner: str, window: int = WINDOW) -> None:
        self.nc, self.js = nc, js
        self.log = log.bind(component="dispatcher")
        self.owner = owner
        self.window = window
        self.rotations: dict[tuple[str, str], Rotation] = {}
        self.cursors: dict[str, int] = {}  #: fair subject -> the sequence to read from next
        self.unpurged: dict[str, int] = {}  #: fair subject -> moved below this sequence, purge not yet confirmed
        self.lines: set[tuple[str, str]] = set()  #: (queue, priority) with fair work at the last tick
        self.recent: dict[str, deque[float]] = {}  #: key -> monotonic times of capped dispatches
        self.defs: dict[str, fairness.FairDef] = {}
        self.defs_read = -fairness.REFRESH
        self.publisher = AsyncPublisher(js, self.log, ack_timeout=ACK_TIMEOUT)
        self.moved = 0

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.publisher.run_expiry)
            await leases.in_turn(self.js, LOCKS_BUCKET, DISPATCH_KEY, self.owner, LEASE_TTL, self._term, self.log, "dispatch")

    async def _term(self, lease: leases.Lease) -> None:
        """Dispatch while this bot holds the lease."""
        # A new term reads every line from its start: the last term (here or on another bot) may have
        # left moved jobs unpurged, and moving them again is a duplicate the jobs stream drops.
        self.cursors, self.unpurged = {}, {}
        while not lease.lost:
            if not await self.tick():
                await anyio.sleep(IDLE)

    async def tick(self) -> int:
        """Move what the windows have room for, in turn over the keys; returns how many moved."""
        if self.unpurged:
            await self._purge()
        # While every line the last tick saw is still full, asking for every key's count (a reply
        # that grows with the number of keys) would change nothing: wait for room first.
        rooms = {line: self.window - await self._unstarted(*line) for line in self.lines}
        if rooms and all(room <= 0 for room in rooms.values()):
            return 0
        try:
            counts = await fairness.waiting(self.nc)
        except MissingResourceError:
            return 0  # not provisioned (an older store): nothing can be waiting
        lines: dict[tuple[str, str], dict[str, int]] = {}
        for subject, n in counts.items():
            parsed = parse_fair_subject(subject)
            if parsed is not None:
                lines.setdefault(parsed[:2], {})[parsed[2]] = n
        self.lines = set(lines)
        if not lines:
            return 0
        await self._refresh_defs()
        plan: list[tuple[str, str, str, int]] = []
        for (queue, priority), keys in lines.items():
            room = rooms[(queue, priority)] if (queue, priority) in rooms else self.window - await self._unstarted(queue, priority)
            if room > 0:
                plan += await self._deal(queue, priority, keys, room)
        moved = await self._move(plan) if plan else 0
        self.moved += moved
        return moved

    async def _refresh_defs(self) -> None:
        if time.monotonic() - self.defs_read >= fairness.REFRESH:
            self.defs = await fairness.definitions(self.js)
            self.defs_read = time.monotonic()

    async def _unstarted(self, queue: str, priority: str) -> int:
        """Jobs stored for the queue and priority and not yet delivered to a bot (the window's fill)."""
        try:
            info = await api(self.nc, consumer_op("INFO", JOBS_STREAM, consumer_name(queue, priority)))
        except MissingResourceError:
            return self.window  # no consumer serves it yet: keep its jobs fair until one does
        return int(info.get("num_pending") or 0)

    async def _deal(self, queue: str, priority: str, keys: dict[str, int], room: int) -> list[tuple[str, str, str, int]]:
        """(queue, priority, key, how many) to move: the room dealt round robin by weight."""
        available = {key: min(n, await self._free(key)) for key, n in keys.items()}
        weights = {key: self.defs[key].weight for key in keys if key in self.defs}
        picks = self.rotations.setdefault((queue, priority), Rotation()).deal(available, weights, room)
        wanted: dict[str, int] = {}
        for key in picks:  # the order inside one tick does not matter: they all land within a window
            wanted[key] = wanted.get(key, 0) + 1
        return [(queue, priority, key, n) for key, n in wanted.items()]

    async def _free(self, key: str) -> int:
        """How many more of the key's jobs may be dispatched now: unbounded without a cap."""
        d = self.defs.get(key)
        if d is None or not d.cap:
            return 1 << 30
        recent = self.recent.setdefault(key, deque())
        while recent and time.monotonic() - recent[0] > RECENT:
            recent.popleft()
        return max(0, d.cap - await fairness.held_slots(self.js, key) - len(recent))

    async def _move(self, plan: list[tuple[str, str, str, int]]) -> int:
        """Republish each planned key's next jobs to the jobs stream, then purge them from their lines.

        Every read, then every publish, then every purge goes out together: one tick waits for the
        server about three times, however many keys it serves.
        """
        subjects = [fair_subject(q, p, key) for q, p, key, _ in plan]
        batches = await asyncio.gather(*[batch_get(self.nc, FAIR_STREAM, subject, self.cursors.get(subject, 1), n)
                                          for subject, (_, _, _, n) in zip(subjects, plan, strict=True)])
        futures = []
        for (queue, priority, key, _), msgs in zip(plan, batches, strict=True):
            futures += [await self.publisher.publish(job_subject(queue, priority), m.data, moved_headers(m, key)) for m in msgs]
        if not futures:
            return 0
        await asyncio.wait(futures, timeout=ACK_TIMEOUT + 1)
        failed = [f for f in futures if not f.done() or f.exception() is not None]
        if failed:
            error = failed[0].exception() if failed[0].done() else TimeoutError("no ack")
            raise CorralError(f"moving {len(futures)} fair jobs to the jobs stream failed ({len(failed)} unacknowledged): {error}")
        for subject, (_, _, key, _), msgs in zip(subjects, plan, batches, strict=True):
            if msgs:
                self.cursors[subject] = self.unpurged[subject] = int((msgs[-1].headers or {})["Nats-Sequence"]) + 1
                if key in self.recent:
                    self.recent[key].extend([time.monotonic()] * len(msgs))
        await self._purge()
        return len(futures)

    async def _purge(self) -> None:
        """Purge each moved line up to its cursor; a failed purge is retried next tick (the cursor
        already skips what was moved, so nothing is moved twice meanwhile)."""
        points = dict(self.unpurged)
        answers = await asyncio.gather(*[api(self.nc, stream_op("PURGE", FAIR_STREAM), {"filter": subject, "seq": keep})
                                         for subject, keep in points.items()], return_exceptions=True)
        for (subject, keep), answer in zip(points.items(), answers, strict=True):
            if not isinstance(answer, BaseException) and self.unpurged.get(subject) == keep:
                del self.unpurged[subject]
            elif isinstance(answer, BaseException):
                self.log.warning("dispatch.purge_failed", subject=subject, error=str(answer) or type(answer).__name__)


def moved_headers(msg: Msg, key: str) -> dict[str, str]:
    """A fair message's headers for the jobs stream: its own ones (trace context), its job's
    ``Nats-Msg-Id`` (so a re-move is a duplicate) and the key it waited under."""
    h = msg.headers or {}
    out = {k: v for k, v in h.items() if not k.startswith("Nats-")}
    out["Nats-Msg-Id"] = h.get("Nats-Msg-Id") or f"{FAIR_STREAM}-{h.get('Nats-Sequence')}"
    out["Nats-Expected-Stream"] = JOBS_STREAM
    out[fairness.KEY_HEADER] = key
    return out


async def batch_get(nc: NATS, stream: str, subject: str, seq: int, n: int, timeout: float = 5.0) -> list[Msg]:
    """Up to ``n`` messages on ``subject`` from ``seq`` on, in one batched direct get.

    The server answers with the messages and then a ``204`` (end of batch) or a ``404`` (none).
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out: list[Msg] = []
    try:
        body = {"seq": max(seq, 1), "next_by_subj": subject, "batch": n}
        await nc.publish(api_subject(f"DIRECT.GET.{stream}"), json.dumps(body).encode(), reply=inbox)
        with anyio.fail_after(timeout):
            async for msg in sub.messages:
                if (msg.headers or {}).get("Status"):
                    break
                out.append(msg)
                if len(out) >= n:
                    break
    except TimeoutError as e:
        if not out:
            raise nats.errors.TimeoutError() from e
    finally:
        await sub.unsubscribe()
    return out

