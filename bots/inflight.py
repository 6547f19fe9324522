"""The jobs a bot holds right now: one entry per delivery, from claim to settlement.

Entries are keyed by the delivery's ack subject, not the job id or stream
sequence: after a freeze or a cut the same job can be redelivered to this bot
while its earlier delivery is still running, and both must be tracked (each
keeps its own ack deadline alive).

A job is registered when the pull loop starts its task, synchronously, so the
registry never misses a job that was claimed but whose task has not run yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.msg import Msg

from corral.core.connect import TRANSIENT
from corral.core.log import Logger


@dataclass
class InFlight:
    msg: Msg
    job_id: str
    kind: str
    since: float  #: wall clock
    started: float  #: monotonic (anyio.current_time())


class InFlightJobs:
    """The registry, with an event that fires each time it empties (the processing -> ready debounce)."""

    def __init__(self) -> None:
        self._jobs: dict[str, InFlight] = {}
        self.idle = anyio.Event()
        self.idle_since = 0.0  #: anyio.current_time() the registry last emptied

    def add(self, msg: Msg, job_id: str, kind: str) -> str:
        """Register a delivery; returns its key."""
        key = msg.reply
        self._jobs[key] = InFlight(msg, job_id, kind, time.time(), anyio.current_time())
        return key

    def remove(self, key: str) -> None:
        del self._jobs[key]
        if not self._jobs:
            self.idle_since = anyio.current_time()
            self.idle.set()

    def reset_idle(self) -> None:
        self.idle = anyio.Event()

    def values(self) -> list[InFlight]:
        return list(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    async def keep_alive(self, since: float, buffered: list[tuple[Msg, float]], log: Logger) -> None:
        """Send +WPI for every delivery held since before ``since`` (anyio.current_time()).

        ``buffered``: deliveries claimed but waiting for a slot (bots/feeds.py), with their arrival
        times; they keep their deadlines alive the same way.
        """
        held = [(f.msg, f.started, f.job_id) for f in self.values()]
        held += [(msg, arrived, "(claimed)") for msg, arrived in buffered]
        for msg, started, job_id in held:
            if started <= since:
                try:
                    await msg.in_progress()
                except (nats.errors.Error, *TRANSIENT) as e:
                    log.warning("job.in_progress_failed", job=job_id, error=str(e) or type(e).__name__)

    def __iter__(self) -> Iterator[InFlight]:
        return iter(self.values())
