"""Running one delivered job to its outcome: result-then-ack, retry, or dead letter.

:meth:`Executor.process` is the outline of a job's path; each step lives in a
module of its own. The order of effects is what makes a lost ack or a dead bot
harmless:

1. **Settle** (bots/settle.py): a redelivery first looks for the job's result;
   if one is recorded the job is acked without running the handler again
   (``duplicate``). A redelivery whose earlier deliveries died with no outcome
   (the bot holding it was killed or froze past its ack deadline)
   ``poison_after`` times is quarantined in the dead-letter stream, with the
   ids of those bots; one out of attempts is dead-lettered.
   A redelivery that shows a death with no outcome is a *suspect*: it runs
   alone on its bot (bots/inflight.py), so only the culprit of a death is
   charged with it (docs/jobs.md, "Poison jobs and bystanders").
2. **Admit** (bots/attempt.py): a job over its kind's fleet-wide limits
   (core/limits.py) is not run: it is nak'd with a delay and recorded
   ``throttled``, and that delivery is not an attempt. A concurrency slot is
   held (renewed) for the whole handler run and released however it ends.
3. **Run** (bots/attempt.py) the handler under its timeout and cancel scope.
4. **Record** (bots/record.py): success publishes the result and waits for the
   stream's acknowledgement, *then* acks the job. The results stream refuses a
   second result for the same job, so a slow bot finishing a job another bot
   completed records nothing.
5. **Follow** (bots/after.py): before the ack or term, the after-outcome hooks
   run (chain, saga, fan-in, unique key); a redelivery repeats them harmlessly.
6. Failure naks with a backoff delay until ``max_attempts``, then moves the
   job's original bytes to the dead-letter stream (bots/dead_letter.py) and
   terminates the delivery.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from corral.bots.after import AfterOutcome, Ended, Outcome, default_hooks, follow
from corral.bots.attempt import Attempts, Ran
from corral.bots.commit import Committer
from corral.bots.config import BotConfig
from corral.bots.eager import Eager
from corral.bots.dead_letter import DeadLetters, terminate
from corral.bots.outbox import Outbox
from corral.bots.record import Recorder, Recording, Status
from corral.bots.settle import Bury, Recorded, Run, Settler
from corral.bots.trail import Counters, OnCount, Trail, uncounted
from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError, InvalidJobError
from corral.core.handlers import Registry
from corral.core.history import job_events, throttled_deliveries
from corral.core.kinds import coverage
from corral.core.limits import Limiter
from corral.core.log import Logger
from corral.core.messages import EventType, Job, decode_job
from corral.core.names import parse_job_subject
from corral.core.publisher import AsyncPublisher
from corral.core import tracing
from corral.core.schedules import firing_id
from corral.core.singleton import Busy


#: Seconds (plus up to 100% jitter) before a suspect refused by a reserved bot is offered again.
SUSPECT_RETRY = 1.0
#: Seconds (plus up to 100% jitter) before a job of a kind this bot does not serve is offered again.
NOT_SERVED_RETRY = 0.5


def _nothing() -> None:
    pass


class Gate(Protocol):
    """Where a suspect waits to have its bot to itself (bots/inflight.py)."""

    def alone(self, key: str) -> AbstractAsyncContextManager[bool]: ...


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before the next attempt: exponential from ``base``, capped, plus up to 25% jitter."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return delay * (1 + random.random() / 4)


class Executor:
    """Processes deliveries for one bot incarnation."""

    def __init__(
        self,
        js: JetStreamContext,
        publisher: AsyncPublisher,
        registry: Registry,
        config: BotConfig,
        incarnation: str,
        log: Logger,
        max_deliver: int,
        on_count: OnCount = uncounted,
        outbox: Outbox | None = None,
        limiter: Limiter | None = None,
        hooks: Sequence[AfterOutcome] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.js = js
        self.config = config
        self.log = log
        self.trail = Trail(publisher, config.name, incarnation, log, on_count)
        self.hooks = list(hooks) if hooks is not None else default_hooks(js, self.trail, log)
        self.settler = Settler(js, config, max_deliver)
        self.attempts = Attempts(js, registry, config, self.trail, limiter)
        self.recorder = Recorder(publisher, outbox, log, bot=config.name,
                                 committer=Committer(publisher, batching=config.group_commit))
        self.dead_letters = DeadLetters(js, config, self.trail, self.hooks)
        self.gate = gate  #: None: no bot around (a suspect then runs beside others, and says so)
        self.eager = Eager(self.attempts, config, log)  #: plain first deliveries, run eagerly (bots/eager.py)

    async def prepare(self) -> None:
        """Read the limits of the kinds this bot serves before it claims, so their first jobs can run
        eagerly (bots/eager.py); a kind whose limits cannot be read now is read by its first job."""
        limits = self.attempts.limits
        for kind in self.attempts.registry.handlers:
            try:
                await limits.definition(kind)
            except (CorralError, nats.errors.Error, *TRANSIENT) as e:
                self.log.debug("limits.unread", kind=kind, error=str(e) or type(e).__name__)

    # What the bot reads and drives: counts for its heartbeat, the running jobs, progress, cancels.
    @property
    def counters(self) -> Counters:
        return self.trail.counters

    @property
    def running(self):
        return self.attempts.running

    @property
    def progress(self):
        return self.attempts.progress

    def cancel(self, job_id: str) -> bool:
        """Mark a job cancelled; if it is running here, cancel its handler. True if it was running."""
        return self.attempts.cancel(job_id)

    @staticmethod
    def decode(msg: Msg) -> Job | InvalidJobError:
        """The delivery's job, under the id it runs as (a periodic firing gets its own), or why not.

        Its queue and priority are the delivery subject's.
        """
        try:
            job = decode_job(msg.data)
        except InvalidJobError as e:
            return e
        changes = {}
        job_id = firing_id(job.id, msg.headers, msg.metadata.sequence.stream)
        if job_id != job.id:
            changes["id"] = job_id
        # The delivery subject is the truth for queue and priority (core/names.py), so the events
        # and the result record the line the job actually ran in.
        place = parse_job_subject(msg.subject)
        if place is not None and place != (job.queue, job.priority):
            changes["queue"], changes["priority"] = place
        return msgspec.structs.replace(job, **changes) if changes else job

    async def process(self, msg: Msg, decoded: Job | InvalidJobError | None = None, ran: Callable[[], None] = _nothing) -> None:
        """Take one delivery to its outcome (``decoded``: :meth:`decode`'s answer, if the caller has it).

        ``ran`` is called once the handler has returned, before the result is committed: the bot
        gives the handler's slot to the next job then (bots/slots.py). It may not be called at all
        (a duplicate, a dead letter, a throttle): the caller frees the slot when this returns.

        Cancellation (a drain) propagates to the caller.
        """
        delivered = msg.metadata.num_delivered
        job = self.decode(msg) if decoded is None else decoded
        if isinstance(job, InvalidJobError):
            await self.dead_letters.bury(msg, None, f"invalid payload: {job}", delivered)
            return
        verdict = await self.settler.settle(job, delivered)
        if isinstance(verdict, Recorded):
            await self._duplicate(msg, job, verdict)
            return
        if isinstance(verdict, Bury):
            await self.dead_letters.bury(msg, job, verdict.reason, verdict.attempt, verdict.bots)
            return
        attempt = verdict.attempt
        log = self.log.bind(job=job.id, kind=job.kind, cid=job.correlation_id, attempt=attempt)
        if job.id in self.attempts.cancelled:
            await self._ended(msg, job, attempt, Ended.CANCELLED, "cancelled before it ran", log)
            return
        if job.expires_at is not None and time.time() > job.expires_at:
            await self._ended(msg, job, attempt, Ended.EXPIRED, f"expired at {job.expires_at:.3f}, not run", log)
            return
        if job.kind not in self.attempts.registry.handlers and await self._served_elsewhere(job.kind):
            await self._not_served(msg, job, attempt, log)
            return
        if not verdict.suspect or self.gate is None:
            # A one-slot bot always runs its job alone: a death there is the job's own.
            await self._attempt(msg, job, verdict, log, isolated=self.config.concurrency == 1, ran=ran)
            return
        async with self.gate.alone(msg.reply) as alone:
            if alone:
                await self._attempt(msg, job, verdict, log, isolated=True, ran=ran)
                return
        await self._refused(msg, job, attempt, log)

    async def _attempt(self, msg: Msg, job: Job, run: Run, log: Logger, isolated: bool, ran: Callable[[], None] = _nothing) -> None:
        """Admit, run and record one attempt."""
        admitted = await self.attempts.admit(msg, job, run.attempt, run.throttles, log)
        if admitted is None:
            return
        if isinstance(admitted, Busy):
            await self._ended(msg, job, run.attempt, Ended.DROPPED,
                              f"singleton key {admitted.key} is held by {admitted.holder}: dropped, not run", log)
            return
        # The attempt's span (core/tracing.py) covers the run, the recording and what follows it, so
        # the steps a chain or saga submits carry it as their parent.
        with tracing.attempt(job, msg.headers, run.attempt, run.previous_span):
            await self._run_admitted(msg, job, run, admitted, log, isolated, on_ran=ran)

    async def _run_admitted(self, msg: Msg, job: Job, run: Run, admitted, log: Logger, isolated: bool,
                            on_ran: Callable[[], None] = _nothing) -> None:
        """Run an admitted attempt and record its outcome."""
        async with admitted.held() as slot:
            ran = await self.attempts.run(job, run.attempt, msg.metadata.num_delivered > 1, log, isolated)
        if not isolated:  # a job running alone keeps the bot to itself until it is settled
            on_ran()
        if slot is not None and slot.lost:
            log.warning("limit.slot_lost", detail="the slot's lease lapsed while the job ran; the kind's cap may have been exceeded")
        await self.conclude(msg, job, run, ran, log)

    async def conclude(self, msg: Msg, job: Job, run: Run, ran: Ran, log: Logger, tried: Exception | None = None) -> None:
        """Settle an attempt by what its run came to: cancelled, failed, or a result to record
        (``tried``: the error its result's first commit met, see Recorder.record)."""
        if ran.cancelled:
            await self._ended(msg, job, run.attempt, Ended.CANCELLED, "cancelled while running", log)
        elif ran.error is not None:
            await self._failed(msg, job, run, ran.error, log)
        else:
            await self._succeeded(msg, job, run.attempt, ran.data, ran.started, log, ran.value, tried)

    async def _refused(self, msg: Msg, job: Job, attempt: int, log: Logger) -> None:
        """A suspect whose bot is reserved by another suspect: offer it again soon, elsewhere or later."""
        await self._defer(msg, job, attempt, log, SUSPECT_RETRY, "suspect waits to run alone",
                          "suspect waits to run alone; this bot is reserved by another; retry in {delay:.1f}s")

    async def _defer(self, msg: Msg, job: Job, attempt: int, log: Logger, base: float, reason: str, detail: str) -> None:
        """Hand a delivery that never started back after ``base`` seconds (plus up to 100% jitter).

        Recorded as ``throttled`` (confirmed before the nak), so the delivery is not an attempt.
        ``detail`` may name ``{delay}``.
        """
        delay = base * (1 + random.random())
        await self.trail.emit(job, EventType.THROTTLED, attempt, confirm=True, detail=detail.format(delay=delay))
        await msg.nak(delay=delay)
        self.trail.count("deferred", job.kind)
        log.info("job.deferred", reason=reason, retry_in=round(delay, 2))

    async def _served_elsewhere(self, kind: str) -> bool:
        """Whether another live bot advertises ``kind`` (core/kinds.py), or old bots may serve it.

        If none does, the job runs here and fails as ``UnknownKindError``: an attempt, so a kind
        no bot serves (a typo) is dead-lettered after its attempts rather than passed around.
        """
        try:
            return (await coverage(self.js)).serves(kind) is not False
        except (CorralError, nats.errors.Error, *TRANSIENT):
            return True  # cannot tell: offer it again rather than spend an attempt

    async def _not_served(self, msg: Msg, job: Job, attempt: int, log: Logger) -> None:
        """A kind this bot has no handler for: offer it again soon, to a bot that serves it.

        Bots with different handlers share a queue (the README's `corral up` bots beside an
        application's own), so a job can reach a bot that cannot run it while another live bot
        can. That delivery never starts, so it is not an attempt; the consumer's ``max_deliver``
        still bounds the deliveries.
        """
        await self._defer(msg, job, attempt, log, NOT_SERVED_RETRY, "kind not served here",
                          f"kind {job.kind!r} is not served by this bot; offered again in {{delay:.1f}}s")

    async def _duplicate(self, msg: Msg, job: Job, recorded: Recorded) -> None:
        """A redelivery of a job whose result is recorded: not re-run, but what follows success is.

        A bot that died between recording the result and submitting the next step must not stall a chain.
        """
        await follow(self.hooks, Outcome(Ended.DUPLICATE, job, recorded.attempt, recorded.result.value))
        await msg.ack()
        self.trail.counters.duplicates += 1
        self.trail.count("duplicate", job.kind)
        await self.trail.emit(job, EventType.DUPLICATE, recorded.attempt, detail="result already recorded; not re-run")
        self.log.info("job.duplicate", job=job.id, kind=job.kind, cid=job.correlation_id, attempt=recorded.attempt)

    async def _ended(self, msg: Msg, job: Job, attempt: int, ended: Ended, detail: str, log: Logger) -> None:
        """A job that ends without running to a result (cancelled, expired): terminate and record why."""
        await follow(self.hooks, Outcome(ended, job, attempt))
        await terminate(msg, detail)
        await self.trail.emit(job, EventType(ended.value), attempt, detail=detail)
        self.trail.count(str(ended), job.kind)
        log.info(f"job.{ended}", detail=detail)

    async def _succeeded(self, msg: Msg, job: Job, attempt: int, data: bytes, started: float, log: Logger, value=None,
                         tried: Exception | None = None) -> None:
        """Record the result, then settle the job by how that went (``tried``: see Recorder.record)."""
        await self.recorded(msg, job, attempt, await self.recorder.record(job.id, data, log, tried), started, log, value)

    async def recorded(self, msg: Msg, job: Job, attempt: int, recording: Recording, started: float, log: Logger,
                       value=None) -> None:
        """Settle a job whose result's recording went as ``recording`` says: ack, nak, or leave it held."""
        if recording.status == Status.REFUSED:
            await msg.nak(delay=self.config.backoff_max)
            await self.trail.emit(job, EventType.FAILED, attempt, detail=f"result not recorded: {recording.error}; retry later")
            log.error("job.result_refused", error=str(recording.error))
            return
        if recording.status == Status.UNRECORDED:
            # Not recorded and not acked. The result waits in the outbox and is published when the
            # server is back; meanwhile the job is redelivered after its deadline and may run again
            # elsewhere, in which case the fence drops this copy (at-least-once execution).
            log.error("job.result_unrecorded", error=str(recording.error) or type(recording.error).__name__,
                      outbox=self.recorder.outbox is not None)
            return
        if recording.status == Status.FENCED:
            # The fenced copy may be our own first publish, acknowledged too late: the chain must go on.
            ended = Ended.DUPLICATE if recording.retried else Ended.FENCED
            await follow(self.hooks, Outcome(ended, job, attempt, value))
            await msg.ack()
            self.trail.counters.duplicates += 1
            await self.trail.emit(job, EventType.DUPLICATE, attempt, detail="finished after another bot recorded the result")
            log.info("job.duplicate", detail="late finisher fenced")
            return
        await follow(self.hooks, Outcome(Ended.SUCCEEDED, job, attempt, value))
        await msg.ack()
        self.trail.counters.done += 1
        duration = time.time() - started
        self.trail.count("succeeded", job.kind, duration)
        # A first delivery's success is its result (core/timeline.py derives the event); a
        # redelivery's is written, closing the ``started`` it confirmed.
        if msg.metadata.num_delivered > 1 or self.config.full_events:
            await self.trail.emit(job, EventType.SUCCEEDED, attempt, duration=duration)
        if log.debugging:  # a line per job is debug; the bot's summary line counts successes at info
            log.debug("job.succeeded", ms=round(duration * 1000, 2))

    async def _failed(self, msg: Msg, job: Job, run: Run, error: str, log: Logger) -> None:
        self.trail.counters.failed += 1
        self.trail.count("failed", job.kind)
        attempt = run.attempt
        if attempt >= job.max_attempts:
            await self.trail.emit(job, EventType.FAILED, attempt, detail=error)
            bots = sorted({*run.ran_by, self.config.name})
            await self.dead_letters.bury(msg, job, f"failed {attempt} attempt(s); last error: {error}", attempt, bots)
            return
        delay = backoff(attempt, self.config.backoff_base, self.config.backoff_max)
        await msg.nak(delay=delay)
        await self.trail.emit(job, EventType.FAILED, attempt, detail=f"{error}; retry in {delay:.1f}s")
        log.warning("job.failed", error=error, retry_in=round(delay, 2))

    async def hand_back(self, msg: Msg) -> None:
        """Give an unfinished job back for immediate redelivery (a drain ran out of time)."""
        await msg.nak()
        job = self.decode(msg)
        if isinstance(job, InvalidJobError):
            return
        # Numbered like its `started` event (throttled deliveries left out), which it settles.
        attempt = msg.metadata.num_delivered
        if attempt > 1:
            try:
                attempt -= throttled_deliveries(await job_events(self.js, job.id))
            except CorralError as e:  # the hand-back is done; only its record is approximate
                self.log.warning("job.hand_back_unnumbered", job=job.id, error=str(e))
        await self.trail.emit(job, EventType.HANDED_BACK, attempt, detail="bot drained before it finished")
        self.log.info("job.handed_back", job=job.id)

