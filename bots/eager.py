"""Eager runs: a plain first delivery, run by the worker that took it, its result committed with others.

Most deliveries a busy bot takes are the first of an async job with nothing around it: no
singleton key, no limits on its kind, no fairness key, no span to open. For those the full
path (bots/execute.py: settle, admit, a cancel scope and a deadline, then one commit wait
and one task wake per job) cost more than a no-op job's own work. The eager path keeps what
such a job needs and skips the rest:

1. :meth:`Eager.handler` says, without awaiting anything, whether the delivery is such a
   job: first delivery, async handler (not a batch, not ``@process``), no singleton key and
   no fairness key, not cancelled or expired, a kind the limiter knows to be unlimited, no
   tracer recording, and a bot of more than one slot (a one-slot bot runs every job alone,
   bots/inflight.py). Anything else takes the full path, unchanged.
2. :meth:`Eager.run` calls the handler and steps its coroutine once, in the worker's own
   task. A handler that does not suspend (a no-op or CPU-only job) ends right there: no
   cancel scope, no deadline timer, nothing to cancel it from.
3. A handler that suspends (it awaits real I/O) is finished by the *same* task, so any
   cancel scope it opened before suspending stays in its task. It is then registered as
   running (``corral cancel`` reaches it) and given its deadline (bots/deadlines.py); both
   cancel the worker task itself, and the cancellation is taken back when it is ours.
4. The jobs a worker ran to their end one after another commit their results together
   (:meth:`corral.bots.commit.Committer.commit_many`): they share commit rounds with every
   other result queued, and the worker waits once for them all. Each is then settled as the
   full path settles a success (bots/execute.py ``recorded``); a result whose commit met an
   error goes on through the recorder (retries, the outbox, the fence) as any other does.

The outcome is the full path's: the same result record, the same events (a first delivery's
success writes none), the same failure, retry and dead-letter handling (bots/execute.py
``conclude``), and nothing is acked before its result is stored.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Generator
from typing import Any

import msgspec
from nats.aio.msg import Msg

from corral.bots.attempt import Attempts, Ran
from corral.bots.config import BotConfig
from corral.core import fairness, tracing
from corral.core.errors import CorralError
from corral.core.handlers import Handler, JobContext, Registry
from corral.core.messages import Job, encode

class _Cancel:
    """A suspended eager job's cancel handle: cancels the worker task running it, once."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.fired = False

    def cancel(self) -> None:
        if not self.fired:
            self.fired = True
            self.task.cancel()


class _Resume:
    """Awaits the rest of a coroutine that was already stepped once and yielded ``first``."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # noqa: BLE001 - passed to the coroutine, as ``await`` does
                try:
                    value = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Eager:
    """Runs eligible deliveries eagerly for one bot incarnation (see the module's docstring)."""

    def __init__(self, attempts: Attempts, config: BotConfig) -> None:
        self.attempts = attempts
        self.bot = config.name
        self.on = config.eager and config.concurrency > 1 and not config.full_events
        self._by_kind: dict[str, Handler | None] = {}
        self.runs = 0  #: deliveries run eagerly
        self.suspended = 0  #: of those, handlers that suspended and were finished under a deadline

    def handler(self, msg: Msg, job: Job | CorralError) -> Handler | None:
        """The job's handler if this delivery can run eagerly, else None (it takes the full path)."""
        if not self.on or isinstance(job, CorralError):
            return None
        if job.kind in self._by_kind:
            fn = self._by_kind[job.kind]
        else:
            fn = self._by_kind[job.kind] = self._eligible_handler(self.attempts.registry, job.kind)
        if fn is None or job.singleton is not None or msg.metadata.num_delivered != 1:
            return None
        if job.id in self.attempts.cancelled or (job.expires_at is not None and time.time() > job.expires_at):
            return None
        headers = msg.headers
        if headers and fairness.KEY_HEADER in headers:
            return None
        if not self.attempts.limits.known_unlimited(job.kind) or tracing.recording():
            return None
        return fn

    @staticmethod
    def _eligible_handler(registry: Registry, kind: str) -> Handler | None:
        fn = registry.handlers.get(kind)
        if fn is None or kind in registry.batches or kind in registry.isolated or not Registry.is_async(fn):
            return None
        return fn

    async def run(self, fn: Handler, job: Job, msg: Msg, on_suspend: Callable[[], None]) -> Ran:
        """Run the handler to its end, as attempt 1; ``on_suspend`` is called if it suspends, before
        this task waits for it (the caller lets other workers take what it would have taken)."""
        a = self.attempts
        self.runs += 1
        started = time.time()
        ctx = JobContext(job=job, attempt=1, bot=self.bot, js=a.js,
                         progress=functools.partial(a.report_progress, job.id))
        with tracing.untraced(msg.headers):  # the trace id current while it runs, as the full path has it
            try:
                coro = fn(job.args, ctx)
                try:
                    step = coro.send(None)
                except StopIteration as stop:
                    return self._done(job, started, stop.value)
                on_suspend()
                return await self._resumed(job, coro, step, started)
            except Exception as e:  # noqa: BLE001 - the worker boundary: any handler error fails the attempt
                return Ran(started, False, f"{type(e).__name__}: {e}")

    async def _resumed(self, job: Job, coro: Any, step: Any, started: float) -> Ran:
        """The rest of a suspended handler, cancellable by ``corral cancel`` and its deadline."""
        a = self.attempts
        self.suspended += 1
        task = asyncio.current_task()
        assert task is not None
        handle = _Cancel(task)
        due = a.deadlines.add(handle, max(0.0, job.timeout - (time.time() - started)))
        a.running[job.id] = handle
        try:
            value = await _Resume(coro, step)
        except asyncio.CancelledError:
            if not handle.fired:
                raise  # a drain or a forced stop: the caller hands the job back
            task.uncancel()
            if job.id in a.cancelled:
                return Ran(started, True, None)
            return Ran(started, False, f"timed out after {job.timeout}s")
        finally:
            a.deadlines.discard(due, handle)
            a.running.pop(job.id, None)
        if handle.fired:  # the handler swallowed its cancellation and returned: its value stands
            task.uncancel()
        return self._done(job, started, value)

    def _done(self, job: Job, started: float, value: Any) -> Ran:
        """A handler's return value as the run's encoded result, or why it cannot be one."""
        try:
            data = encode(self.attempts._result(job, 1, started, value))
        except msgspec.EncodeError as e:
            return Ran(started, False, f"result is not JSON-encodable: {e}")
        if len(data) > self.attempts.max_payload:
            return Ran(started, False, f"result is {len(data)} bytes, over the server's max_payload of {self.attempts.max_payload}")
        return Ran(started, False, None, data, value)
