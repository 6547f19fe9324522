"""One bot at a time purges consumed jobs from CORRAL_JOBS, behind a lease.

Every bot runs this loop, because a bot may run without a supervisor; the KV key
``$KV.corral_locks.corral.purge.jobs`` (:data:`PURGE_KEY`, a :mod:`corral.core.leases`
key with a TTL) decides which one purges. The holder renews it; when it dies or is cut
off, the TTL runs out and another bot takes over within about ``LEASE_TTL`` seconds.

Each tick the holder purges every work subject below the keep points it read on the
*previous* tick (core/purge.py). The lag gives the reaper time: a message the server gave
up on lets the ack floor pass it unacked, and its advisory names it. The holder records
every such sequence it hears of and never purges up to it while it is still in the stream
(the reaper moves it to the dead-letter stream and deletes it).
"""

from __future__ import annotations

import json
import time

import anyio
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core import leases
from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError
from corral.core.log import Logger
from corral.core.names import JOBS_STREAM, LOCKS_BUCKET, MAX_DELIVERIES_ADVISORY
from corral.core.purge import consumer_floors, held_back, keep_points, purge_below

PURGE_KEY = "corral.purge.jobs"  #: in the corral_locks bucket; documented in docs/resources.md
LEASE_TTL = 10.0
INTERVAL = 1.0
#: A summary line at info this often (seconds); each tick's count goes to debug.
SUMMARY_EVERY = 60.0


class Purger:
    def __init__(self, nc: NATS, js: JetStreamContext, log: Logger, owner: str, interval: float = INTERVAL) -> None:
        self.nc, self.js = nc, js
        self.log = log.bind(component="purger")
        self.owner = owner
        self.interval = interval
        self.exhausted: dict[int, str] = {}  #: seq -> subject, announced by MAX_DELIVERIES and not yet gone
        self.filters: dict[str, str] = {}  #: consumer -> its single filter subject
        self.previous: dict[str, int] = {}  #: keep points read on the previous tick
        self.sent: dict[str, int] = {}  #: the last keep point purged per subject
        self.purged = 0

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen)
            await leases.in_turn(self.js, LOCKS_BUCKET, PURGE_KEY, self.owner, LEASE_TTL, self._term, self.log, "purge")

    async def _term(self, lease: leases.Lease) -> None:
        """Purge every tick while this bot holds the lease."""
        self.previous, self.sent = {}, {}  # a new term starts from fresh floors
        last_summary, summarised = time.monotonic(), self.purged
        while not lease.lost:
            await self.tick()
            if time.monotonic() - last_summary >= SUMMARY_EVERY:
                self.log.info("purge.summary", purged=self.purged - summarised, seconds=round(time.monotonic() - last_summary))
                last_summary, summarised = time.monotonic(), self.purged
            await anyio.sleep(self.interval)

    async def tick(self) -> int:
        """Purge below last tick's keep points (held back for exhausted jobs); read new ones."""
        floors = await consumer_floors(self.nc)
        self.filters = {f.name: f.filters[0] for f in floors if len(f.filters) == 1}
        await self._forget_reaped()
        points = held_back(self.previous, self.exhausted)
        purged = 0
        for subject, keep in points.items():
            if keep > self.sent.get(subject, 1):
                purged += await purge_below(self.nc, subject, keep)
                self.sent[subject] = keep
        self.previous = keep_points(floors)
        self.purged += purged
        if purged:
            self.log.debug("purge.tick", purged=purged)
        return purged

    async def _forget_reaped(self) -> None:
        for seq in list(self.exhausted):
            try:
                await self.js.get_msg(JOBS_STREAM, seq=seq, direct=True)
            except nats.js.errors.NotFoundError:
                del self.exhausted[seq]

    async def _listen(self) -> None:
        sub = await self.nc.subscribe(MAX_DELIVERIES_ADVISORY)
        try:
            async for msg in sub.messages:
                try:
                    adv = json.loads(msg.data)
                    consumer = str(adv.get("consumer") or "")
                    subject = self.filters.get(consumer) or await self._filter_of(consumer)
                    self.exhausted[int(adv["stream_seq"])] = subject
                except (ValueError, KeyError, CorralError, *TRANSIENT) as e:
                    self.log.warning("purge.advisory_unhandled", error=str(e) or type(e).__name__)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _filter_of(self, consumer: str) -> str:
        info = await self.js.consumer_info(JOBS_STREAM, consumer)
        return info.config.filter_subject or ""
