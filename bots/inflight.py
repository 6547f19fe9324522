"""The jobs a bot holds right now: one entry per delivery, from claim to settlement.

Entries are keyed by the delivery's ack subject, not the job id or stream
sequence: after a freeze or a cut the same job can be redelivered to this bot
while its earlier delivery is still running, and both must be tracked (each
keeps its own ack deadline alive).

A job is registered when the pull loop starts its task, synchronously, so the
registry never misses a job that was claimed but whose task has not run yet.

**Running alone.** The registry is also the gate a suspect job (one whose
history shows a death with no outcome; bots/settle.py) passes to run alone:
:meth:`InFlightJobs.alone` reserves the bot, the pull loop claims nothing while
it is reserved, and the suspect waits until it is the only job held and no
claim is in flight. A second suspect arriving while the bot is reserved is
refused (the executor hands it back with a short delay) rather than queued: if
the first kills the bot, the second must not die unstarted with it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.msg import Msg

from corral.core.connect import TRANSIENT
from corral.core.log import Logger
from corral.core.messages import CurrentJob


@dataclass
class InFlight:
    msg: Msg
    job_id: str
    kind: str
    since: float  #: wall clock
    started: float  #: monotonic (time.monotonic())


class InFlightJobs:
    """The registry, with an event that fires each time it empties (the processing -> ready debounce)."""

    def __init__(self) -> None:
        self._jobs: dict[str, InFlight] = {}
        self.idle = anyio.Event()
        self.idle_since = 0.0  #: time.monotonic() the registry last emptied
        self.reserved: str | None = None  #: the key of the suspect that holds (or waits for) the bot
        self.opened = anyio.Event()  #: set when a reservation ends
        self._changed = anyio.Event()
        self._claims = 0

    def add(self, msg: Msg, job_id: str, kind: str) -> str | None:
        """Register a delivery; returns its key, or None if that very delivery (its ack subject) is
        already running here: around a server restart a pull request can be answered twice with the
        same message, and a second run of it would ack, and deregister, what the first one holds."""
        key = msg.reply
        if key in self._jobs:
            return None
        self._jobs[key] = InFlight(msg, job_id, kind, time.time(), time.monotonic())
        return key

    def remove(self, key: str) -> None:
        self._jobs.pop(key, None)
        self._changed.set()
        if not self._jobs:
            self.idle_since = time.monotonic()
            self.idle.set()

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """Around a claim and the registration of what it brought: a suspect does not start meanwhile."""
        self._claims += 1
        try:
            yield
        finally:
            self._claims -= 1
            self._changed.set()

    @asynccontextmanager
    async def alone(self, key: str) -> AsyncIterator[bool]:
        """Reserve the bot for the delivery ``key`` and wait until it is the only one held.

        Yields False at once if another suspect holds the reservation; True once alone, and the
        bot stays reserved (nothing new is claimed) until the block ends.
        """
        if self.reserved is not None:
            yield False
            return
        self.reserved, self.opened = key, anyio.Event()
        try:
            while len(self._jobs) > 1 or self._claims:
                self._changed = anyio.Event()
                await self._changed.wait()
            yield True
        finally:
            self.reserved = None
            self.opened.set()

    async def until_open(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for a reservation to end."""
        with anyio.move_on_after(timeout):
            await self.opened.wait()

    def reset_idle(self) -> None:
        self.idle = anyio.Event()

    def current(self, progress: dict[str, tuple[float, str | None, bool]], limit: int = 20) -> list[CurrentJob]:
        """The first ``limit`` held jobs as the heartbeat reports them, with their last progress."""
        out = []
        for f in self.values()[:limit]:
            percent, message, _ = progress.get(f.job_id, (None, None, False))
            out.append(CurrentJob(id=f.job_id, kind=f.kind, since=f.since, progress=percent, message=message))
        return out

    def values(self) -> list[InFlight]:
        return list(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    async def keep_alive(self, since: float, buffered: list[tuple[Msg, float]], log: Logger) -> None:
        """Send +WPI for every delivery held since before ``since`` (time.monotonic()).

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
