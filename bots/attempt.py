"""One attempt at a job: admission against its kind's limits, then the handler run.

* **Admission** (core/singleton.py, core/limits.py): a singleton job whose key
  another job holds waits (or, if it asked to, is dropped); a job over its kind's fleet-wide limits is not
  run. It is nak'd with a delay and recorded ``throttled``; a throttled delivery
  is not an attempt. Limits that cannot be read throttle too: a limit that
  fails open would not be a limit. An admitted job holds its concurrency slot
  (renewed) for the whole handler run, released however the run ends.
* **The run**: the handler runs under its timeout and a cancel scope the bot's
  cancellation watch can cancel. What happened comes back as a :class:`Ran`
  for the executor to record, after the slot is released.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from corral.bots.config import BotConfig
from corral.bots import singleton as singletons
from corral.bots.batching import Batches
from corral.bots.deadlines import Cancellable, Deadlines, job_scope
from corral.bots.isolation import run_isolated
from corral.bots.trail import Trail
from corral.core import fairness, tracing
from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError
from corral.core.handlers import JobContext, Registry
from corral.core.limits import FREE, Admitted, Limiter, Throttled, throttle_delay
from corral.core.log import Logger
from corral.core.messages import EventType, Job, JobResult, encode
from corral.core.singleton import Busy


class Ran(NamedTuple):
    """What one handler run came to: cancelled, failed with ``error``, or ``value`` encoded as ``data``.

    A named tuple: one is made per job, and a frozen dataclass costs several times more to make.
    """

    started: float  #: Unix seconds
    cancelled: bool
    error: str | None
    data: bytes = b""
    value: Any = None


class _ResultTooLarge(Exception):
    """The handler's result does not fit in one message."""


class Attempts:
    """Admits and runs jobs for one bot incarnation; knows which are running, cancelled, reporting progress."""

    def __init__(self, js: JetStreamContext, registry: Registry, config: BotConfig, trail: Trail,
                 limiter: Limiter | None = None) -> None:
        self.js = js
        self.registry = registry
        self.config = config
        self.trail = trail
        self.limits = limiter or Limiter(js)
        self.caps = fairness.Caps(js)
        self.max_payload = js._nc.max_payload or 1024 * 1024
        self.cancelled: set[str] = set()
        self.running: dict[str, Cancellable] = {}  #: job id -> what cancels its run
        self.progress: dict[str, tuple[float, str | None, bool]] = {}
        self.batches = Batches(registry.batches, registry.handlers)
        self._async: dict[Any, bool] = {}  #: handler -> is it a coroutine function
        self.deadlines = Deadlines()

    async def admit(self, msg: Msg, job: Job, attempt: int, throttles: int, log: Logger) -> Admitted | singletons.Both | Busy | None:
        """Admit the job against its singleton key and its kind's limits, or throttle it and return None.

        A ``drop`` singleton whose key is held answers :class:`Busy` (the caller ends the job).

        The ``throttled`` event is confirmed before the nak, so the redelivery finds it when it
        numbers its attempt.
        """
        owner = f"{self.config.name}/{job.id}"
        key = await singletons.take(self.js, job, owner, throttles)
        if isinstance(key, Busy):
            return key
        verdict = key if isinstance(key, Throttled) else await self._limits(job, owner, throttles)
        fair_key = (msg.headers or {}).get(fairness.KEY_HEADER)
        if isinstance(verdict, Admitted) and fair_key:
            verdict = await self._fair_cap(fair_key, owner, throttles, verdict)
        if isinstance(verdict, Admitted) and isinstance(key, Admitted):
            return verdict if key is FREE else singletons.Both(key, verdict)
        if isinstance(key, Admitted):
            await singletons.give_back(self.js, key)
        assert isinstance(verdict, Throttled)
        await self.trail.emit(job, EventType.THROTTLED, attempt, confirm=True, detail=f"{verdict.reason}; retry in {verdict.delay:.1f}s")
        await msg.nak(delay=verdict.delay)
        self.trail.count("throttled", job.kind)
        log.info("job.throttled", reason=verdict.reason, retry_in=round(verdict.delay, 2))
        return None

    async def _limits(self, job: Job, owner: str, throttles: int) -> Admitted | Throttled:
        """The kind's limits' verdict; limits that cannot be read throttle (a limit failing open is none)."""
        try:
            return await self.limits.admit(job.kind, owner, throttles)
        except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
            why = str(e) or type(e).__name__
            if isinstance(e, nats.errors.NoRespondersError):
                why = "the corral_limits bucket is missing: run `corral provision`"
            return Throttled(f"limits unreadable ({why})", throttle_delay(throttles))

    async def _fair_cap(self, key: str, owner: str, throttles: int, admitted: Admitted) -> Admitted | Throttled:
        """The fairness key's cap (core/fairness.py) on top of the kind's admission; both or neither."""
        try:
            slot = await self.caps.admit(key, owner, throttles)
        except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
            slot = Throttled(f"fairness cap of {key} unreadable ({str(e) or type(e).__name__})", throttle_delay(throttles))
        if isinstance(slot, Throttled):
            await singletons.give_back(self.js, admitted)
            return slot
        return admitted if slot is FREE else fairness.Joint(parts=(admitted, slot))

    async def run(self, job: Job, attempt: int, redelivered: bool, log: Logger, isolated: bool = False) -> Ran:
        """Run the handler once; what happened, for the caller to record (after the slot is released).

        ``isolated``: the job has its bot to itself, and its ``started`` event says so.
        """
        # On a redelivery the start is confirmed before the handler runs: if this bot dies in the
        # handler, the next delivery must see the death to count it (poison quarantine). A first
        # delivery writes none: its result records the start, and if it dies the redelivery
        # infers the death from the trail's silence (core/history.py, first_delivery_unrecorded).
        if redelivered or self.config.full_events:
            await self.trail.emit(job, EventType.STARTED, attempt, confirm=redelivered, isolated=isolated)
        log.debug("job.started")
        started = time.time()
        error: str | None = None  # stays None when the scope is cancelled mid-handler
        # One scope is both the cancel handle and the handler's deadline. The deadline is a shared
        # loop timer that cancels the scope (bots/deadlines.py): a scope's own deadline, a second
        # scope (fail_after), or even a timer per job cost a measurable share of a no-op job's CPU.
        with job_scope() as scope:
            due = self.deadlines.add(scope, job.timeout)
            self.running[job.id] = scope
            try:
                value = await self._handler(job, attempt, alone=isolated)
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
                self.deadlines.discard(due, scope)
                self.running.pop(job.id, None)
        if scope.cancelled_caught:
            if job.id in self.cancelled:  # only cancel() cancels this scope; otherwise the deadline passed
                return Ran(started, True, None)
            error = f"timed out after {job.timeout}s"
        if error is not None:
            return Ran(started, False, error)
        return Ran(started, False, None, data, value)

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

    async def flush_progress(self, running: dict[str, str]) -> None:
        """Publish the progress reported since the last flush by the jobs in ``running`` (id -> kind)."""
        for job_id, (percent, message, dirty) in list(self.progress.items()):
            if job_id not in running:
                self.progress.pop(job_id, None)
                continue
            if dirty and job_id in self.running:  # not after the handler ended (a cancel)
                self.progress[job_id] = (percent, message, False)
                await self.trail.progress(job_id, running[job_id], f"{percent:.0f}% {message or ''}".strip())

    async def _handler(self, job: Job, attempt: int, alone: bool = False):
        fn = self.registry.get(job.kind)
        ctx = JobContext(job=job, attempt=attempt, bot=self.config.name, js=self.js,
                         progress=lambda percent, message=None: self.report_progress(job.id, percent, message))
        if job.kind in self.registry.batches:
            # A job that has the bot to itself (a suspect) is a batch of one: it cannot take
            # healthy jobs down with it if it kills the bot again (bots/batching.py).
            if alone:
                return await self.batches.alone(job.id, job.args, attempt, ctx)
            return await self.batches.call(job.id, job.args, attempt, ctx, job.timeout)
        # The caller's scope carries the job's deadline.
        is_async = self._async.get(fn)
        if is_async is None:  # inspect's test costs about a microsecond: once per handler, not per job
            is_async = self._async[fn] = Registry.is_async(fn)
        if is_async:
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
            job_id=job.id, kind=job.kind, queue=job.queue, bot=self.config.name, incarnation=self.trail.incarnation,
            attempt=attempt, started_at=started, finished_at=time.time(), value=value, job=job,
            trace_id=tracing.current_trace_id(),
        )
