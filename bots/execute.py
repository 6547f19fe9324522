"""Running one delivered job to its outcome: result-then-ack, retry, or dead letter.

The order of effects is what makes a lost ack or a dead bot harmless:

1. A redelivery first looks for the job's result; if one is recorded the job
   is acked without running the handler again (``duplicate``).
2. A redelivery whose earlier deliveries died with no outcome (no failure, no
   result: the bot holding it was killed or froze past its ack deadline)
   ``poison_after`` times is quarantined in the dead-letter stream, with the
   ids of those bots.
3. Success publishes the result to ``corral.results.<job_id>`` and waits for
   the stream's acknowledgement, *then* acks the job. The results stream keeps
   one message per subject and refuses a second (``discard_new_per_subject``):
   that fence holds as long as the result is kept (the results stream's
   max_age, 7 days), not just for a dedupe window, so a slow bot that
   finishes a job another bot already completed gets a refusal, acks, and
   records nothing.
4. Failure naks with a backoff delay until ``max_attempts``, then moves the
   job's original bytes to the dead-letter stream and terminates the delivery.
5. A job over its kind's fleet-wide limits (core/limits.py) is not run: it is
   nak'd with a delay and recorded ``throttled``. Throttled deliveries are not
   attempts: a delivery's attempt number is ``num_delivered`` minus the
   throttled deliveries its events show. A concurrency slot is held (renewed)
   for the whole handler run and released however the run ends.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from corral.bots.config import BotConfig
from corral.bots.isolation import run_isolated
from corral.bots.outbox import Outbox
from corral.core.connect import TRANSIENT, publish_error
from corral.core.dlq import move_to_dlq
from corral.core.errors import CorralError, InvalidJobError, ResultAlreadyRecordedError, StreamFullError, TransportError
from corral.core.handlers import JobContext, Registry
from corral.core.history import deliveries_without_outcome, job_events, job_result, throttled_deliveries
from corral.core.limits import Admitted, Limiter, Throttled, throttle_delay
from corral.core.log import Logger
from corral.core.messages import Event, EventType, Job, JobResult, decode_job, encode
from corral.core.names import job_events_subject, result_subject
from corral.core.publisher import AsyncPublisher, wait_ack
from corral.core.schedules import firing_id
from corral.core.submit import submit
from corral.core import groups, unique


#: Seconds a bot holds a finished job while its result cannot be recorded, before leaving it to
#: the outbox and a redelivery.
RESULT_HOLD = 60.0


@dataclass
class Counters:
    done: int = 0
    failed: int = 0
    dead: int = 0
    duplicates: int = 0


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
        on_count: Callable[..., None] = lambda outcome, kind, seconds=None: None,
        outbox: Outbox | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.outbox = outbox
        self.limits = limiter or Limiter(js)
        self._event_seq = itertools.count(1)
        self.cancelled: set[str] = set()
        self.running: dict[str, anyio.CancelScope] = {}
        self.progress: dict[str, tuple[float, str | None, bool]] = {}
        self.max_payload = js._nc.max_payload or 1024 * 1024
        self.js = js
        self.publisher = publisher
        self.registry = registry
        self.config = config
        self.incarnation = incarnation
        self.log = log
        self.max_deliver = max_deliver
        self.counters = Counters()
        self.on_count = on_count

    async def emit(self, job: Job, event_type: EventType, attempt: int, *, confirm: bool = False, **fields) -> None:
        """Publish a job event; ``confirm`` waits for the stream's ack (failures are logged, not raised)."""
        event = Event(
            type=event_type, ts=time.time(), job_id=job.id, bot=self.config.name, incarnation=self.incarnation,
            attempt=attempt, kind=job.kind, queue=job.queue, correlation_id=job.correlation_id, **fields,
        )
        # A Msg-Id per event: an event re-sent from the outbox after an ambiguous timeout is stored once.
        headers = {"Nats-Msg-Id": f"ev-{self.incarnation}-{next(self._event_seq)}"}
        if not confirm:
            await self.publisher.fire(job_events_subject(job.id), encode(event), headers)
            return
        fut = await self.publisher.publish(job_events_subject(job.id), encode(event), headers)
        try:
            await wait_ack(fut, self.publisher.ack_timeout)
        except Exception as e:  # noqa: BLE001 - an unrecorded event must not stop the job
            self.log.warning("publish.lost", job=job.id, event_type=event_type, error=str(e) or type(e).__name__)

    @staticmethod
    def decode(msg: Msg) -> Job | InvalidJobError:
        """The delivery's job, under the id it runs as (a periodic firing gets its own), or why not."""
        try:
            job = decode_job(msg.data)
        except InvalidJobError as e:
            return e
        job_id = firing_id(job.id, msg.headers, msg.metadata.sequence.stream)
        return job if job_id == job.id else msgspec.structs.replace(job, id=job_id)

    async def process(self, msg: Msg, decoded: Job | InvalidJobError | None = None) -> None:
        """Take one delivery to its outcome (``decoded``: :meth:`decode`'s answer, if the caller has it).

        Cancellation (a drain) propagates to the caller.
        """
        delivered = msg.metadata.num_delivered
        job = self.decode(msg) if decoded is None else decoded
        if isinstance(job, InvalidJobError):
            await self._dead_letter(msg, None, f"invalid payload: {job}", delivered)
            return
        attempt, throttles = delivered, 0
        if delivered > 1:
            counted = await self._settled_on_redelivery(msg, job, delivered)
            if counted is None:
                return
            attempt, throttles = counted
        log = self.log.bind(job=job.id, kind=job.kind, cid=job.correlation_id, attempt=attempt)
        if job.id in self.cancelled:
            await self._ended(msg, job, attempt, EventType.CANCELLED, "cancelled before it ran", log)
            return
        if job.expires_at is not None and time.time() > job.expires_at:
            await self._ended(msg, job, attempt, EventType.EXPIRED, f"expired at {job.expires_at:.3f}, not run", log)
            return
        admitted = await self._admit(msg, job, attempt, throttles, log)
        if admitted is None:
            return
        async with admitted.held() as slot:
            ran = await self._attempt(job, attempt, delivered > 1, log)
        if slot is not None and slot.lost:
            log.warning("limit.slot_lost", detail="the slot's lease lapsed while the job ran; the kind's cap may have been exceeded")
        if ran.cancelled:
            await self._ended(msg, job, attempt, EventType.CANCELLED, "cancelled while running", log)
        elif ran.error is not None:
            await self._failed(msg, job, attempt, ran.error, log)
        else:
            await self._succeeded(msg, job, attempt, ran.data, ran.started, log, ran.value)

    async def _admit(self, msg: Msg, job: Job, attempt: int, throttles: int, log: Logger) -> Admitted | None:
        """Admit the job against its kind's limits, or throttle it and return None.

        A throttled delivery is nak'd with a delay and is not an attempt. Its ``throttled`` event is
        confirmed before the nak, so the redelivery finds it when it numbers its attempt. Limits
        that cannot be read throttle too: a limit that fails open would not be a limit.
        """
        try:
            verdict = await self.limits.admit(job.kind, f"{self.config.name}/{job.id}", throttles)
        except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
            why = str(e) or type(e).__name__
            if isinstance(e, nats.errors.NoRespondersError):
                why = "the corral_limits bucket is missing: run `corral provision`"
            verdict = Throttled(f"limits unreadable ({why})", throttle_delay(throttles))
        if isinstance(verdict, Admitted):
            return verdict
        await self.emit(job, EventType.THROTTLED, attempt, confirm=True, detail=f"{verdict.reason}; retry in {verdict.delay:.1f}s")
        await msg.nak(delay=verdict.delay)
        self.on_count("throttled", job.kind)
        log.info("job.throttled", reason=verdict.reason, retry_in=round(verdict.delay, 2))
        return None

    async def _attempt(self, job: Job, attempt: int, redelivered: bool, log: Logger) -> _Ran:
        """Run the handler once; what happened, for the caller to record (after the slot is released)."""
        # On a redelivery the start is confirmed before the handler runs: if this bot dies in the
        # handler, the next delivery must see the death to count it (poison quarantine). First
        # deliveries skip the round trip; that costs at most one uncounted death per job.
        if redelivered or not self.config.lean_events:
            await self.emit(job, EventType.STARTED, attempt, confirm=redelivered)
        log.debug("job.started")
        started = time.time()
        error: str | None = None  # stays None when the scope is cancelled mid-handler
        with anyio.CancelScope() as scope:
            self.running[job.id] = scope
            try:
                value = await self._run_handler(job, attempt)
                data = encode(self._result(job, attempt, started, value))
                if len(data) > self.max_payload:
                    raise _ResultTooLarge(f"result is {len(data)} bytes, over the server's max_payload of {self.max_payload}")
            except TimeoutError:
                error = f"timed out after {job.timeout}s"
            except msgspec.EncodeError as e:
                error = f"result is not JSON-encodable: {e}"
            except _ResultTooLarge as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - the worker boundary: any handler error fails the attempt
                error = f"{type(e).__name__}: {e}"
            else:
                error = None
            finally:
                self.running.pop(job.id, None)
        if scope.cancelled_caught:
            return _Ran(started, True, None)
        if error is not None:
            return _Ran(started, False, error)
        return _Ran(started, False, None, data, value)

    def cancel(self, job_id: str) -> bool:
        """Mark a job cancelled; if it is running here, cancel its handler. True if it was running."""
        self.cancelled.add(job_id)
        scope = self.running.get(job_id)
        if scope is not None:
            scope.cancel()
        return scope is not None

    def report_progress(self, job_id: str, percent: float, message: str | None) -> None:
        """Called by handlers (any thread) through ``ctx.progress``; published by the bot's flusher."""
        self.progress[job_id] = (float(percent), message, True)

    async def _ended(self, msg: Msg, job: Job, attempt: int, kind: EventType, detail: str, log: Logger) -> None:
        """A job that ends without running to a result (cancelled, expired): terminate and record why."""
        await msg._client.publish(msg.reply, b"+TERM " + detail.encode())
        await self.emit(job, kind, attempt, detail=detail)
        self.on_count(str(kind), job.kind)
        await self._release_unique(job)
        log.info(f"job.{kind}", detail=detail)

    async def _release_unique(self, job: Job) -> None:
        if job.unique_key:
            try:
                await unique.release(self.js, job)
            except Exception as e:  # noqa: BLE001 - the key's TTL releases it anyway
                self.log.warning("unique.release_failed", job=job.id, error=str(e) or type(e).__name__)

    async def _compensate(self, job: Job, reason: str, attempt: int) -> None:
        """Saga: the job died, so undo the completed steps in reverse order, as a chain.

        The first compensation gets a deterministic id (``<job id>-comp0``) and the rest follow as
        its ``then`` steps, so a bot that dies here and a redelivery that repeats it submit the same
        jobs once (Nats-Msg-Id, then the result fence).
        """
        if not job.compensations:
            return
        first, *rest = job.compensations
        comp = msgspec.structs.replace(
            first, id=f"{job.id[:100]}-comp0", then=rest, compensations=[], created_at=time.time(),
            args={**first.args, "failed_job": job.id, "failure": reason[:500]},
            correlation_id=first.correlation_id or job.correlation_id or job.id,
        )
        await submit(self.js, comp)
        await self.emit(job, EventType.COMPENSATING, attempt, detail=comp.id)

    async def _fan_in(self, job: Job, outcome: str, detail, attempt: int) -> None:
        """Record a group member's end; the member that completes the group submits the callback."""
        if not job.group or job.on_complete is None:
            return
        members = await groups.member_done(self.js, job, outcome, detail)
        if members is None:
            return
        done = msgspec.structs.replace(
            job.on_complete, id=f"{job.group}-done", args={**job.on_complete.args, "group": job.group, "members": members},
            created_at=time.time(), correlation_id=job.on_complete.correlation_id or job.correlation_id or job.group,
        )
        await submit(self.js, done)
        await self.emit(job, EventType.FAN_IN, attempt, detail=done.id)

    async def _continue(self, job: Job, value, attempt: int) -> None:
        """Submit the job's ``then`` steps with the result; deterministic ids make a re-run harmless."""
        await self._fan_in(job, "succeeded", value, attempt)
        if not job.then:
            return
        ids = []
        for i, step in enumerate(job.then):
            step_id = f"{job.id[:100]}-then{i}"
            # Saga: what undoes the steps done so far travels with the chain, most recent first.
            undo = ([job.compensate] if job.compensate else []) + list(job.compensations)
            nxt = msgspec.structs.replace(step, id=step_id, args={**step.args, "previous": value}, compensations=undo,
                                          created_at=time.time(), correlation_id=step.correlation_id or job.correlation_id or job.id)
            await submit(self.js, nxt)
            ids.append(step_id)
        await self.emit(job, EventType.CHAINED, attempt, detail=",".join(ids))

    async def _settled_on_redelivery(self, msg: Msg, job: Job, delivered: int) -> tuple[int, int] | None:
        """Settle a redelivery that must not run (duplicate, poison, out of attempts) and return None.

        Otherwise return (attempt, throttles): the delivery's attempt number, which leaves out the
        deliveries a limit throttled, and how many of those there were.
        """
        log = self.log.bind(job=job.id, kind=job.kind, cid=job.correlation_id, attempt=delivered)
        recorded = await job_result(self.js, job.id)
        if recorded is not None:
            # The handler is not re-run, but what follows the result is: a bot that died between
            # recording the result and submitting the next step must not stall a chain.
            await self._continue(job, recorded.value, delivered)
            await self._release_unique(job)
            await msg.ack()
            self.counters.duplicates += 1
            self.on_count("duplicate", job.kind)
            await self.emit(job, EventType.DUPLICATE, delivered, detail="result already recorded; not re-run")
            log.info("job.duplicate")
            return None
        events = await job_events(self.js, job.id)
        throttles = throttled_deliveries(events)
        attempt = delivered - throttles
        died = deliveries_without_outcome(events)
        if len(died) >= self.config.poison_after:
            bots = sorted({bot for _, bot in died})
            reason = f"quarantined: {len(died)} deliveries died with no outcome (bots: {', '.join(bots)})"
            await self._dead_letter(msg, job, reason, attempt, bots)
            return None
        # max_deliver counts every delivery, throttled or not: the server's backstop (docs/features.md).
        if attempt > job.max_attempts or delivered >= self.max_deliver:
            reason = self._exhausted(job, attempt, delivered, throttles)
            if died:
                reason += f"; {len(died)} earlier deliveries died with no outcome"
            await self._dead_letter(msg, job, reason, attempt, sorted({b for _, b in died}))
            return None
        return attempt, throttles

    def _exhausted(self, job: Job, attempt: int, delivered: int, throttles: int) -> str:
        """Why a redelivery is out of attempts (or deliveries)."""
        if not throttles:
            return f"delivery {delivered} exceeds the {min(job.max_attempts, self.max_deliver - 1)} attempt(s) allowed"
        if attempt > job.max_attempts:
            return f"attempt {attempt} exceeds the {job.max_attempts} attempt(s) allowed ({throttles} throttled deliveries not counted)"
        return (f"delivery {delivered} reached the consumer's max_deliver ({self.max_deliver}) after {throttles} throttled "
                f"deliveries: kind {job.kind} stayed over its limits")

    async def _run_handler(self, job: Job, attempt: int):
        fn = self.registry.get(job.kind)
        ctx = JobContext(job=job, attempt=attempt, bot=self.config.name, js=self.js,
                         progress=lambda percent, message=None: self.report_progress(job.id, percent, message))
        with anyio.fail_after(job.timeout):
            if Registry.is_async(fn):
                return await fn(job.args, ctx)
            spec = self.registry.isolated.get(job.kind)
            if spec is not None:
                # Registered @process: a child process, stopped for real (SIGTERM, then SIGKILL)
                # before a cancel, the timeout or a drain lets the job end. bots/isolation.py.
                return await run_isolated(spec, job.args, ctx)
            # A sync handler runs in a thread; on cancel, timeout or drain the thread is abandoned
            # (it cannot be interrupted) and finishes in the background. See docs/jobs.md.
            return await anyio.to_thread.run_sync(fn, job.args, ctx, abandon_on_cancel=True)

    def _result(self, job: Job, attempt: int, started: float, value) -> JobResult:
        return JobResult(
            job_id=job.id, kind=job.kind, queue=job.queue, bot=self.config.name, incarnation=self.incarnation,
            attempt=attempt, started_at=started, finished_at=time.time(), value=value, job=job,
        )

    async def _record_result(self, subject: str, data: bytes, log: Logger) -> tuple[Exception | None, bool]:
        """Publish a result, retrying while the results stream cannot answer.

        A leader election, a reconnect, or subject interest not yet propagated through a cluster
        makes the stream unreachable for seconds. Leaving the job unacked then would have it
        redelivered and run again, and every such delivery counts as an attempt, so a job that
        succeeded could be dead-lettered for "exceeding its attempts". Instead the job is held
        (the bot's in-progress acks keep its deadline alive) and the result retried for up to
        :data:`RESULT_HOLD` seconds.

        Returns (None or the error that ended the retries, whether a retry was made).
        """
        deadline = anyio.current_time() + RESULT_HOLD
        delay, retried, kept = 0.1, False, None
        while True:
            fut = await self.publisher.publish(subject, data)
            try:
                await wait_ack(fut, self.publisher.ack_timeout)
                err = None
            except Exception as e:  # noqa: BLE001 - translated right here
                err = publish_error(e, subject)
            if not isinstance(err, TransportError) or anyio.current_time() + delay > deadline:
                if kept is not None and (err is None or isinstance(err, ResultAlreadyRecordedError)):
                    self.outbox.discard(kept)  # recorded after all: nothing left to flush
                return err, retried
            if kept is None and self.outbox is not None:
                # Write-ahead: if this bot dies while it holds the job, the result survives on disk.
                kept = self.outbox.put(subject, data)
            log.warning("job.result_retry", error=str(err), retry_in=round(delay, 2))
            await anyio.sleep(delay)
            delay, retried = min(delay * 2, 2.0), True

    async def _succeeded(self, msg: Msg, job: Job, attempt: int, data: bytes, started: float, log: Logger, value=None) -> None:
        subject = result_subject(job.id)
        err, retried = await self._record_result(subject, data, log)  # on a drain, the result stays in the outbox
        if err is not None:
            if isinstance(err, StreamFullError):
                # The results stream or store is full: not the job's fault, and not a death.
                await msg.nak(delay=self.config.backoff_max)
                await self.emit(job, EventType.FAILED, attempt, detail=f"result not recorded: {err}; retry later")
                log.error("job.result_refused", error=str(err))
                return
            if not isinstance(err, ResultAlreadyRecordedError):
                # Not recorded and not acked. The result is on disk (written when the first retry
                # began) and is published when the server is back; meanwhile the job is redelivered
                # after its deadline and may run again elsewhere, in which case the fence drops
                # this copy (at-least-once execution).
                if self.outbox is not None and not retried:
                    self.outbox.put(subject, data)
                log.error("job.result_unrecorded", error=str(err) or type(err).__name__, outbox=self.outbox is not None)
                return
            if retried:
                # The fenced copy may be our own first publish, acknowledged too late: the chain must go on.
                await self._continue(job, value, attempt)
            await self._release_unique(job)
            await msg.ack()
            self.counters.duplicates += 1
            await self.emit(job, EventType.DUPLICATE, attempt, detail="finished after another bot recorded the result")
            log.info("job.duplicate", detail="late finisher fenced")
            return
        await self._continue(job, value, attempt)
        await self._release_unique(job)
        await msg.ack()
        self.counters.done += 1
        duration = time.time() - started
        self.on_count("succeeded", job.kind, duration)
        if not self.config.lean_events:
            await self.emit(job, EventType.SUCCEEDED, attempt, duration=duration)
        log.info("job.succeeded", ms=round(duration * 1000, 2))

    async def _failed(self, msg: Msg, job: Job, attempt: int, error: str, log: Logger) -> None:
        self.counters.failed += 1
        self.on_count("failed", job.kind)
        if attempt >= job.max_attempts:
            await self.emit(job, EventType.FAILED, attempt, detail=error)
            await self._dead_letter(msg, job, f"failed {attempt} attempt(s); last error: {error}", attempt)
            return
        delay = backoff(attempt, self.config.backoff_base, self.config.backoff_max)
        await msg.nak(delay=delay)
        await self.emit(job, EventType.FAILED, attempt, detail=f"{error}; retry in {delay:.1f}s")
        log.warning("job.failed", error=error, retry_in=round(delay, 2))

    async def _dead_letter(self, msg: Msg, job: Job | None, reason: str, attempt: int, bots: list[str] = ()) -> None:
        seq = msg.metadata.sequence.stream
        queue = msg.subject.split(".")[2] if msg.subject.count(".") >= 3 else "unknown"
        job_id = job.id if job else f"invalid-{seq}"
        try:
            await move_to_dlq(
                self.js, data=msg.data, queue=queue, job_id=job_id, reason=reason, attempts=attempt,
                source_subject=msg.subject, source_seq=seq, bots=bots,
            )
        except CorralError as e:
            # Not stored: keep the job where it is and try again later; nothing is dropped.
            self.log.error("job.dead_letter_failed", job=job_id, error=str(e))
            await msg.nak(delay=self.config.backoff_max)
            return
        if job is not None:
            await self._compensate(job, reason, attempt)  # before the term: a redelivery repeats it harmlessly
            await self._fan_in(job, "dead", reason, attempt)
        await msg._client.publish(msg.reply, b"+TERM " + reason.encode()[:1000])
        if job is not None:
            await self._release_unique(job)
        self.counters.dead += 1
        self.on_count("dead", job.kind if job else "invalid")
        if job is not None:
            await self.emit(job, EventType.DEAD, attempt, detail=reason)
        self.log.warning("job.dead", job=job_id, reason=reason)

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
        await self.emit(job, EventType.HANDED_BACK, attempt, detail="bot drained before it finished")
        self.log.info("job.handed_back", job=job.id)


Processor = Callable[[Msg], Awaitable[None]]


@dataclass(frozen=True)
class _Ran:
    """What one handler run came to: cancelled, failed with ``error``, or ``value`` encoded as ``data``."""

    started: float  #: Unix seconds
    cancelled: bool
    error: str | None
    data: bytes = b""
    value: Any = None


class _ResultTooLarge(Exception):
    """The handler's result does not fit in one message."""
