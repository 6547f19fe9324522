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

import collections
import contextvars
import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from corral.bots.config import BotConfig
from corral.bots.deadlines import job_scope
from corral.bots.execute import Executor
from corral.bots.feeds import Feeds
from corral.bots.handoff import Handoff
from corral.bots.inflight import InFlightJobs
from corral.bots.attempt import Ran
from corral.bots.record import RECORDED
from corral.bots.settle import Run
from corral.bots.slots import Hold, Slots
from corral.bots.state import BotState, StateMachine
from corral.core.connect import TRANSIENT
from corral.core import tracing
from corral.core.errors import CorralError, TransportError
from corral.core.log import Logger
from corral.core.messages import Job
from corral.core.names import result_fence, result_subject

#: Seconds a worker keeps running eligible jobs one after another before it commits their results.
GROUP_SPAN = 0.02

#: Seconds a stopping bot spends, in all, handing back jobs it claimed and never ran.
LEFTOVER_TIMEOUT = 5.0

#: Seconds one hand-back (a nak and its event) may take.
HAND_BACK_TIMEOUT = 5.0

FETCH_TIMEOUT = 1.0  #: seconds an idle bot's long-poll waits for work; also bounds how long a drain waits for the pull loop

Claimed = Handoff[tuple[str, Msg, Any]]  #: (in-flight key, delivery, decoded job or its decode error)
_Ran = tuple[str, Msg, Job, Hold, Ran]  #: a job run eagerly: in-flight key, delivery, job, its slots, its run


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
        await executor.prepare()
        handoff: Claimed = Handoff()
        try:
            await self._run_workers(handoff)
        finally:
            # Claimed but never taken by a worker (a forced stop, or the drain's deadline, came first).
            await self._hand_back_left(handoff)

    async def _run_workers(self, handoff: Claimed) -> None:
        async with anyio.create_task_group() as jobs:
            self._jobs, self._jobs_scope = jobs, jobs.cancel_scope
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

    async def _hand_back_left(self, handoff: Claimed) -> None:
        """Give back what was claimed and never run, within :data:`LEFTOVER_TIMEOUT` in all (a stop
        must not hang on a server that does not answer: what is left is redelivered after its deadline)."""
        await self._hand_back_all([(key, msg, None) for key, msg, _ in iter(handoff.take, None)], within=LEFTOVER_TIMEOUT)

    async def _job_worker(self, handoff: Claimed) -> None:
        while (claimed := await handoff.get()) is not None:
            await self._run_claimed(handoff, claimed)
            del claimed  # a parked worker keeps nothing of its last jobs alive

    async def _run_claimed(self, handoff: Claimed, claimed: tuple[str, Msg, Any]) -> None:
        """Run ``claimed`` and what is queued behind it: eligible jobs eagerly, one after another,
        their results then committed together (bots/eager.py); any other job on the full path.

        A group stops growing after :data:`GROUP_SPAN` seconds, so CPU-bound handlers do not hold
        finished results back; and when a job suspends, the jobs that ran before it are settled by
        another task at once rather than after it.
        """
        eager = self.executor.eager
        key, msg, job = claimed
        fn = eager.handler(msg, job)
        if fn is None:  # the full path, without the group's scope
            handoff.spread()
            await self._run_job(key, msg, job)
            return
        ran: list[_Ran] = []
        began = time.monotonic()
        context = contextvars.copy_context()  # the worker's own: not the suspending handler's

        def suspending() -> None:
            handoff.spread()
            if ran:
                context.run(self._jobs.start_soon, self._settle_ran, ran.copy())
                ran.clear()

        running = False  #: the handler of (key, msg, job, hold) is running right now
        try:
            # One cancel scope for the whole group (bots/eager.py): nothing in it awaits until a handler
            # suspends, and the group ends with that job, so from its suspension on the scope is its own.
            with job_scope() as scope:
                while True:
                    suspended = eager.suspended
                    hold, started, running = self._slots.hold(), time.time(), True
                    outcome = await eager.run(fn, job, msg, suspending, scope, started)
                    running = False
                    hold.ran()
                    ran.append((key, msg, job, hold, outcome))
                    if eager.suspended != suspended:
                        break  # it waited: commit it before taking more
                    if time.monotonic() - began > GROUP_SPAN:
                        handoff.spread()
                        break
                    if (queued := handoff.take()) is None:
                        break
                    key, msg, job = queued
                    if (fn := eager.handler(msg, job)) is None:
                        handoff.put_front(queued)  # another worker runs it while this one commits what ran
                        break
        except BaseException:  # a drain's deadline or a forced stop, mid-run
            held: list[tuple[str, Msg, Hold | None]] = [(k, m, h) for k, m, _, h, _ in ran]
            await self._hand_back_all([*held, (key, msg, hold)] if running else held)
            raise
        if running:  # the scope caught its own cancel: the suspended job was cancelled or timed out
            hold.ran()
            ran.append((key, msg, job, hold, eager.cut_short(job, started)))
        if ran:
            await self._settle_ran(ran)

    async def _settle_ran(self, ran: list[_Ran]) -> None:
        """Settle jobs that ran eagerly, the successes' results committed together first; each within
        the same boundary as a full-path job (:meth:`_run_job`), with its trace id current."""
        ex = self.executor
        bot = ex.config.name
        pending = collections.deque(ran)
        try:
            ok = [r for r in ran if r[4].error is None and not r[4].cancelled]
            results = [(result_subject(job.id, bot), r.data, result_fence(job.id)) for _, _, job, _, r in ok]
            try:
                answers = await ex.recorder.committer.commit_many(results) if ok else []
            except Exception as e:  # noqa: BLE001 - not sent, or not answered: each result is retried on its own
                answers = [TransportError(str(e) or type(e).__name__)] * len(ok)
            errors = {item[0]: err for item, err in zip(ok, answers, strict=True)}
            while pending:
                key, msg, job, hold, outcome = pending[0]
                try:
                    with tracing.untraced(msg.headers):
                        if key in errors and errors[key] is None:
                            log = self.log.bind(job=job.id, kind=job.kind, attempt=1) if self.log.debugging else self.log
                            await ex.recorded(msg, job, 1, RECORDED, outcome.started, log, outcome.value)
                        else:
                            log = self.log.bind(job=job.id, kind=job.kind, cid=job.correlation_id, attempt=1)
                            await ex.conclude(msg, job, Run(1), outcome, log, tried=errors.get(key))
                except (nats.errors.Error, *TRANSIENT) as e:
                    self.log.warning("job.interrupted", job=job.id, error=str(e) or type(e).__name__)
                except Exception as e:  # noqa: BLE001 - the job-task boundary, as in _run_job
                    self.log.error("job.internal_error", job=job.id, error=f"{type(e).__name__}: {e}")
                pending.popleft()
                self.inflight.remove(key)
                hold.settled()
        except anyio.get_cancelled_exc_class():
            await self._hand_back_all([(k, m, h) for k, m, _, h, _ in pending])
            raise

    async def _hand_back_all(self, unsettled: list[tuple[str, Msg, Hold | None]], within: float = math.inf) -> None:
        """A drain's deadline or a forced stop came: give every unsettled job back (each within
        :data:`HAND_BACK_TIMEOUT`, all within ``within``), then its place. One not handed back is
        redelivered after its ack deadline."""
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(within):
                for key, msg, _ in unsettled:
                    try:
                        with anyio.move_on_after(HAND_BACK_TIMEOUT):
                            await self.executor.hand_back(msg)
                    except Exception as e:  # noqa: BLE001 - the others are still handed back
                        self.log.warning("job.hand_back_failed", job=key, error=str(e) or type(e).__name__)
        finally:
            for key, _, hold in unsettled:
                self.inflight.remove(key)
                if hold is not None:
                    hold.settled()

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
            finally:
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
            with anyio.CancelScope(shield=True), anyio.move_on_after(HAND_BACK_TIMEOUT):
                await self.executor.hand_back(msg)
            raise
        except Exception as e:  # noqa: BLE001 - the job-task boundary: a bug here must not take the bot down
            # The delivery is left unacked, so it is redelivered after its deadline.
            self.log.error("job.internal_error", job=job_id, error=f"{type(e).__name__}: {e}")
        finally:
            self.inflight.remove(key)
            hold.settled()
