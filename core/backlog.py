"""The backlog signal an autoscaler acts on: per consumer, pending + in flight, and the oldest job's age.

The same number KEDA's NATS JetStream scaler computes (``num_pending +
num_ack_pending`` of the consumer), plus the age of the oldest unfinished job,
which tells a slow queue from a long one.

Never the jobs stream's message count: the stream has limits retention and
still holds acked jobs until the purger removes them (core/purge.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext

from corral.core.names import JOBS_STREAM


@dataclass(frozen=True)
class Backlog:
    consumer: str
    pending: int
    in_flight: int
    oldest_age: float  #: seconds since the oldest unfinished job was stored; 0 when none

    @property
    def total(self) -> int:
        return self.pending + self.in_flight


async def backlog(js: JetStreamContext) -> list[Backlog]:
    out = []
    now = dt.datetime.now(dt.UTC)
    for c in await js.consumers_info(JOBS_STREAM):
        age = 0.0
        pending, in_flight = c.num_pending or 0, c.num_ack_pending or 0  # nats-py types the counts optional
        if pending + in_flight:
            floor = c.ack_floor.stream_seq if c.ack_floor else 0  # below it everything is acked
            try:
                oldest = await js.get_msg(JOBS_STREAM, seq=floor + 1, subject=c.config.filter_subject, next=True, direct=True)
                age = max((now - oldest.time).total_seconds(), 0.0) if oldest.time else 0.0
            except nats.js.errors.NotFoundError:
                pass
        out.append(Backlog(c.name, pending, in_flight, age))
    return out


async def unfinished(js: JetStreamContext) -> int:
    """Jobs waiting or in flight over every consumer of the jobs stream: what "pending" means to a user."""
    return sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in await js.consumers_info(JOBS_STREAM))
