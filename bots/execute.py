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
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bots.config import BotConfig
from bots.outbox import Outbox
from core.connect import publish_error
from core.dlq import move_to_dlq
from core.errors import CorralError, InvalidJobError, ResultAlreadyRecordedError, StreamFullError
from core.handlers import JobContext, Registry
from core.history import deliveries_without_outcome, job_events, job_result
from core.log import Logger
from core.messages import Event, EventType, Job, JobResult, decode_job, encode
from core.names import job_events_subject, result_subject
from core.publisher import AsyncPublisher, wait_ack


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
        on_count: Callable[[str], None] = lambda outcome: None,
        outbox: Outbox | None = None,
    ) -> None:
        self.outbox = outbox
        self._event_seq = itertools.count(1)
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

    async def process(self, msg: Msg) -> None:
        """Take one delivery to its outcome. Cancellation (a drain) propagates to the caller."""
        attempt = msg.metadata.num_delivered
        try:
            job = decode_job(msg.data)
        except InvalidJobError as e:
            await self._dead_letter(msg, None, f"invalid payload: {e}", attempt)
            return
        log = self.log.bind(job=job.id, kind=job.kind, cid=job.correlation_id, attempt=attempt)
        if attempt > 1 and await self._settled_on_redelivery(msg, job, attempt, log):
            return
        # On a redelivery the start is confirmed before the handler runs: if this bot dies in the
        # handler, the next delivery must see the death to count it (poison quarantine). First
        # deliveries skip the round trip; that costs at most one uncounted death per job.
        await self.emit(job, EventType.STARTED, attempt, confirm=attempt > 1)
        log.info("job.started")
        started = time.time()
        try:
            value = await self._run_handler(job, attempt)
            data = encode(self._result(job, attempt, started, value))
            if len(data) > self.max_payload:
                raise ValueError(f"result is {len(data)} bytes, over the server's max_payload of {self.max_payload}")
        except TimeoutError:
            await self._failed(msg, job, attempt, f"timed out after {job.timeout}s", log)
        except msgspec.EncodeError as e:
            await self._failed(msg, job, attempt, f"result is not JSON-encodable: {e}", log)
        except ValueError as e:
            await self._failed(msg, job, attempt, str(e), log)
        except Exception as e:  # noqa: BLE001 - the worker boundary: any handler error fails the attempt
            await self._failed(msg, job, attempt, f"{type(e).__name__}: {e}", log)
        else:
            await self._succeeded(msg, job, attempt, data, started, log)

    async def _settled_on_redelivery(self, msg: Msg, job: Job, attempt: int, log: Logger) -> bool:
        if await job_result(self.js, job.id) is not None:
            await msg.ack()
            self.counters.duplicates += 1
            await self.emit(job, EventType.DUPLICATE, attempt, detail="result already recorded; not re-run")
            log.info("job.duplicate")
            return True
        died = deliveries_without_outcome(await job_events(self.js, job.id))
        if len(died) >= self.config.poison_after:
            bots = sorted({bot for _, bot in died})
            reason = f"quarantined: {len(died)} deliveries died with no outcome (bots: {', '.join(bots)})"
            await self._dead_letter(msg, job, reason, attempt, bots)
            return True
        if attempt > job.max_attempts or attempt >= self.max_deliver:
            limit = min(job.max_attempts, self.max_deliver - 1)
            reason = f"delivery {attempt} exceeds the {limit} attempt(s) allowed"
            if died:
                reason += f"; {len(died)} earlier deliveries died with no outcome"
            await self._dead_letter(msg, job, reason, attempt, sorted({b for _, b in died}))
            return True
        return False

    async def _run_handler(self, job: Job, attempt: int):
        fn = self.registry.get(job.kind)
        ctx = JobContext(job=job, attempt=attempt, bot=self.config.name)
        with anyio.fail_after(job.timeout):
            if Registry.is_async(fn):
                return await fn(job.args, ctx)
            # A sync handler runs in a thread; on timeout or drain the thread is abandoned (it
            # cannot be interrupted) and finishes in the background. See docs/jobs.md.
            return await anyio.to_thread.run_sync(fn, job.args, ctx, abandon_on_cancel=True)

    def _result(self, job: Job, attempt: int, started: float, value) -> JobResult:
        return JobResult(
            job_id=job.id, kind=job.kind, queue=job.queue, bot=self.config.name, incarnation=self.incarnation,
            attempt=attempt, started_at=started, finished_at=time.time(), value=value, job=job,
        )

    async def _succeeded(self, msg: Msg, job: Job, attempt: int, data: bytes, started: float, log: Logger) -> None:
        subject = result_subject(job.id)
        fut = await self.publisher.publish(subject, data)
        try:
            await wait_ack(fut, self.publisher.ack_timeout)
        except Exception as e:  # noqa: BLE001 - translated right here
            err = publish_error(e, subject)
            if isinstance(err, StreamFullError):
                # The results stream or store is full: not the job's fault, and not a death.
                await msg.nak(delay=self.config.backoff_max)
                await self.emit(job, EventType.FAILED, attempt, detail=f"result not recorded: {err}; retry later")
                log.error("job.result_refused", error=str(err))
                return
            if not isinstance(err, ResultAlreadyRecordedError):
                # Not recorded and not acked. Keep the result on disk and publish it when the server
                # is back; meanwhile the job is redelivered after its deadline and may run again
                # elsewhere, in which case the fence drops this copy (at-least-once execution).
                if self.outbox is not None:
                    self.outbox.put(subject, data)
                log.error("job.result_unrecorded", error=str(err) or type(err).__name__, outbox=self.outbox is not None)
                return
            await msg.ack()
            self.counters.duplicates += 1
            await self.emit(job, EventType.DUPLICATE, attempt, detail="finished after another bot recorded the result")
            log.info("job.duplicate", detail="late finisher fenced")
            return
        await msg.ack()
        self.counters.done += 1
        self.on_count("succeeded")
        duration = time.time() - started
        await self.emit(job, EventType.SUCCEEDED, attempt, duration=duration)
        log.info("job.succeeded", ms=round(duration * 1000, 2))

    async def _failed(self, msg: Msg, job: Job, attempt: int, error: str, log: Logger) -> None:
        self.counters.failed += 1
        self.on_count("failed")
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
        await msg._client.publish(msg.reply, b"+TERM " + reason.encode()[:1000])
        self.counters.dead += 1
        self.on_count("dead")
        if job is not None:
            await self.emit(job, EventType.DEAD, attempt, detail=reason)
        self.log.warning("job.dead", job=job_id, reason=reason)

    async def hand_back(self, msg: Msg) -> None:
        """Give an unfinished job back for immediate redelivery (a drain ran out of time)."""
        await msg.nak()
        try:
            job = decode_job(msg.data)
        except InvalidJobError:
            return
        await self.emit(job, EventType.HANDED_BACK, msg.metadata.num_delivered, detail="bot drained before it finished")
        self.log.info("job.handed_back", job=job.id)


Processor = Callable[[Msg], Awaitable[None]]
