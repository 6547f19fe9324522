"""A bot's intake: claiming jobs for free slots and running each on a worker task.

The pull loop takes the free slots (bots/slots.py), claims that many jobs from the feeds,
highest priority first (bots/feeds.py), registers each delivery (bots/inflight.py) and
hands it to one of the workers (bots/handoff.py), one worker per slot. It stops claiming
once :meth:`Intake.stop` is called; then the workers finish what they hold, up to the
drain timeout, and hand back (nak) what still runs after it: steps 1 and 2 of the stop
order in bots/bot.py.

Each job costs a call of :meth:`Intake._start_job` and of :meth:`Intake._run_job` on the
worker that takes it, nothing more: no task and no wrapper coroutine per job.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from corral.bots.config import BotConfig
from corral.bots.execute import Executor
from corral.bots.feeds import Feeds
from corral.bots.handoff import Handoff
from corral.bots.inflight import InFlightJobs
from corral.bots.slots import Slots
from corral.bots.state import BotState, StateMachine
from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError
from corral.core.log import Logger

FETCH_TIMEOUT = 1.0  #: seconds an idle bot's long-poll waits for work; also bounds how long a drain waits for the pull loop

Claimed = Handoff[tuple[str, Msg, Any]]  #: (in-flight key, delivery, decoded job or its decode error)


class Intake:
    """The pull loop and the workers that run what it claims."""

    def __init__(self, config: BotConfig, inflight: InFlightJobs, sm: StateMachine, log: Logger) -> None:
        self.inflight = inflight
        self.sm = sm
        self.log = log
        self.drain_timeout = config.drain_timeout
        self.stopping = False  #: no more claims; read by the bot's loops too
        self._force = False
        self._slots = Slots(config.concurrency)
        self._jobs_scope: anyio.CancelScope | None = None
        self.direct_starts = 0  #: jobs started where they were read, while the pull loop waited

    def stop(self, force: bool = False) -> None:
        """Claim nothing more; ``force`` (or a second stop): hand running jobs back at once."""
        self._force = self._force or force or self.stopping
        self.stopping = True
        if self._force and self._jobs_scope is not None:
            self._jobs_scope.cancel()

    async def run(self, nc: Client, feeds: Feeds, executor: Executor, breaker: Callable[[], Awaitable[None]]) -> None:
        """The pull loop, and one worker task per slot that runs the jobs it claims, until stopped.

        Workers instead of a task per job: creating a task cost more than a no-op job's own
        Python work. The slots bound what is claimed, so a claimed job always finds a free worker.
        ``breaker`` is awaited before each claim: it returns once the bot may claim (bots/bot.py).
        """
        self.nc, self.feeds, self.executor, self._breaker = nc, feeds, executor, breaker
        handoff: Claimed = Handoff()
        async with anyio.create_task_group() as jobs:
            self._jobs_scope = jobs.cancel_scope
            for _ in range(self._slots.workers):  # bots/slots.py: a job waiting for its commit keeps its worker
                jobs.start_soon(self._job_worker, handoff)
            try:
                await self._pull_loop(handoff)
            finally:
                handoff.close()
            # The hand-off is closed: each worker finishes what it holds and what is queued, then ends.
            if self._force:
                jobs.cancel_scope.cancel()
            else:
                jobs.cancel_scope.deadline = anyio.current_time() + self.drain_timeout

    async def _job_worker(self, handoff: Claimed) -> None:
        while (claimed := await handoff.get()) is not None:
            await self._run_job(*claimed)

    async def _pull_loop(self, jobs: Claimed) -> None:
        """Claim jobs for free slots, highest priority first (bots/feeds.py has the rules)."""
        while not self.stopping:
            await self._breaker()
            if self.inflight.reserved is not None:
                await self.inflight.until_open(FETCH_TIMEOUT)  # a suspect runs alone: claim nothing
                continue
            free = await self._slots.take()
            started = [0]  # counted as they start: a claim that fails midway has started some
            try:
                await self._claim(jobs, free, started)
                if not started[0] and not self.stopping:
                    # A job arriving meanwhile starts as it is read (bots/feeds.py).
                    await self.feeds.wait(FETCH_TIMEOUT, functools.partial(self._start_direct, jobs, started=started), free)
                    await self._claim(jobs, free - started[0], started)
            except TRANSIENT as e:
                self.log.warning("fetch.failed", error=str(e) or type(e).__name__)
                if not self.nc.is_connected and self.sm.can(BotState.ERROR) and not self.stopping:
                    self.sm.to(BotState.ERROR)
            self._slots.give_back(free - started[0])

    async def _claim(self, jobs: Claimed, free: int, started: list[int]) -> None:
        """Claim up to ``free`` jobs and start each as it comes (counted in ``started[0]``), unless
        stopping or reserved by a suspect."""
        if self.stopping or self.inflight.reserved is not None:
            return
        with self.inflight.claiming():
            await self.feeds.claim(free, functools.partial(self._start_counted, jobs, started=started))

    def _start_direct(self, jobs: Claimed, msg: Msg, *, started: list[int]) -> bool:
        """A job that arrived while the pull loop waits, started where it was read (bots/feeds.py);
        False if it must wait in its buffer: the bot is stopping, or a suspect reserved it."""
        if self.stopping or self.inflight.reserved is not None:
            return False
        with self.inflight.claiming():
            self.direct_starts += self._start_counted(jobs, msg, started=started)
        return True

    def _start_counted(self, jobs: Claimed, msg: Msg, *, started: list[int]) -> bool:
        """:meth:`_start_job`, counted in ``started[0]`` if it started (a second copy of a running
        delivery is dropped and not counted)."""
        if self._start_job(jobs, msg):
            started[0] += 1
            return True
        return False

    def _start_job(self, jobs: Claimed, msg: Msg) -> bool:
        """Register the delivery (synchronously: see bots/inflight.py) and hand it to a worker; False
        for a second copy of a delivery that is already running (it is dropped: the first one settles it)."""
        # Decoded once here; the executor takes the same answer.
        job = Executor.decode(msg)
        if isinstance(job, CorralError):
            job_id, kind = f"invalid-{msg.metadata.sequence.stream}", "?"
        else:
            job_id, kind = job.id, job.kind
        key = self.inflight.add(msg, job_id, kind)
        if key is None:
            self.log.warning("job.duplicate_delivery", job=job_id, detail="the same delivery arrived twice; the copy is dropped")
            return False
        try:
            jobs.put((key, msg, job))
        except BaseException:
            # Registered but never handed on: left registered, it would look like a running copy
            # to every redelivery and be kept alive forever.
            self.inflight.remove(key)
            raise
        if len(self.inflight) == 1 and self.sm.state == BotState.READY:
            self.sm.to(BotState.PROCESSING)
        return True

    async def _run_job(self, key: str, msg: Msg, job) -> None:
        job_id = job.id if not isinstance(job, CorralError) else f"invalid-{msg.metadata.sequence.stream}"
        hold = self._slots.hold()
        try:
            await self.executor.process(msg, job, ran=hold.ran)
        except (nats.errors.Error, *TRANSIENT) as e:
            self.log.warning("job.interrupted", job=job_id, error=str(e) or type(e).__name__)
        except anyio.get_cancelled_exc_class():
            # Drain deadline or forced stop: give the job back for immediate redelivery.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self.executor.hand_back(msg)
            raise
        except Exception as e:  # noqa: BLE001 - the job-task boundary: a bug here must not take the bot down
            # The delivery is left unacked, so it is redelivered after its deadline.
            self.log.error("job.internal_error", job=job_id, error=f"{type(e).__name__}: {e}")
        finally:
            self.inflight.remove(key)
            hold.settled()
