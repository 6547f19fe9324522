"""What a bot records about the jobs it runs: their events, and its own counts.

Every part of the executor (settlement, the attempt, recording, what follows an
outcome, dead-lettering) writes through one :class:`Trail`, so events carry the
same bot, incarnation and Msg-Id scheme whichever part wrote them, and the
heartbeat's counters and the metrics agree.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from corral.bots.commit import CommitStats
from corral.core import tracing
from corral.core.log import Logger
from corral.core.messages import Event, EventType, Job, encode
from corral.core.names import job_events_subject
from corral.core.publisher import AsyncPublisher, wait_ack

#: ``on_count(outcome, kind, seconds=None)``: the metrics' per-kind outcome counter.
OnCount = Callable[..., None]


def uncounted(outcome: str, kind: str, seconds: float | None = None) -> None:
    """An outcome not counted anywhere: no metrics endpoint serves the counts."""


@dataclass
class Counters:
    """The bot's totals, reported in its heartbeat."""

    done: int = 0
    failed: int = 0
    dead: int = 0
    duplicates: int = 0


class Trail:
    """Publishes one bot incarnation's job events and keeps its counts."""

    def __init__(self, publisher: AsyncPublisher, bot: str, incarnation: str, log: Logger,
                 on_count: OnCount = uncounted) -> None:
        self.publisher = publisher
        self.bot = bot
        self.incarnation = incarnation
        self.log = log
        self.counters = Counters()
        self.on_count = on_count
        self._seq = itertools.count(1)

    async def emit(self, job: Job, event_type: EventType, attempt: int, *, confirm: bool = False, **fields) -> None:
        """Publish a job event; ``confirm`` waits for the stream's ack (failures are logged, not raised)."""
        trace_id, span_id = tracing.ids()
        event = Event(
            type=event_type, ts=time.time(), job_id=job.id, bot=self.bot, incarnation=self.incarnation,
            attempt=attempt, kind=job.kind, queue=job.queue, correlation_id=job.correlation_id,
            trace_id=trace_id, span_id=span_id, **fields,
        )
        # A Msg-Id per event: an event re-sent from the outbox after an ambiguous timeout is stored once.
        headers = {"Nats-Msg-Id": f"ev-{self.incarnation}-{next(self._seq)}"}
        subject = job_events_subject(job.id)
        if not confirm:
            await self.publisher.fire(subject, encode(event), headers)
            return
        fut = await self.publisher.publish(subject, encode(event), headers)
        try:
            await wait_ack(fut, self.publisher.ack_timeout)
        except Exception as e:  # noqa: BLE001 - an unrecorded event must not stop the job
            self.log.warning("publish.lost", job=job.id, event_type=event_type, error=str(e) or type(e).__name__)

    async def progress(self, job_id: str, kind: str, detail: str) -> None:
        """Publish a ``progress`` event, fire-and-forget (the next report supersedes a lost one)."""
        event = Event(type=EventType.PROGRESS, ts=time.time(), job_id=job_id, bot=self.bot, incarnation=self.incarnation,
                      kind=kind, detail=detail)
        await self.publisher.fire(job_events_subject(job_id), encode(event))

    def count(self, outcome: str, kind: str, seconds: float | None = None) -> None:
        """Count one delivery's outcome in the metrics (the heartbeat's totals are kept by the caller),
        and on the running attempt's span."""
        self.on_count(outcome, kind, seconds)
        tracing.outcome(outcome)


async def log_summary(counters: Counters, log: Logger, running: Callable[[], int], interval: float,
                      commits: Callable[[], CommitStats] | None = None) -> None:
    """One info line per ``interval`` in which jobs ended: the counts since the last line, and the rate.

    It stands in for a line per job, which at thousands of jobs a second cost more than the job.
    ``commits``: the committer's counters; the line then says how the
    results since the last line were committed (``batches``, ``batched``, ``singles``).
    """
    last = (0, 0, 0, 0)
    last_commits = (0, 0, 0)
    while True:
        await anyio.sleep(interval)
        now = (counters.done, counters.failed, counters.dead, counters.duplicates)
        if now != last:
            done, failed, dead, dup = (a - b for a, b in zip(now, last, strict=True))
            per_s = round((done + dup) / interval, 1)
            extra = {}
            if commits is not None:
                stats = commits()
                seen = (stats.batches, stats.batched, stats.singles + stats.direct)
                extra = dict(zip(("batches", "batched", "singles"), (a - b for a, b in zip(seen, last_commits, strict=True)), strict=True))
                last_commits = seen
            log.info("bot.summary", done=done, failed=failed, dead=dead, dup=dup, per_s=per_s, running=running(), **extra)
            last = now
