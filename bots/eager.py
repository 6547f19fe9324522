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
   task, inside a cancel scope (as the full path has, so a timeout or a cancel is anyio's:
   shields hold, a swallowed cancel comes again at the next await, and a drain's cancel is
   never taken for the job's). The worker enters one scope around its whole group of eager
   runs (bots/intake.py ``_run_claimed``): one per job cost a tenth of a busy bot's CPU, and
   nothing in a group awaits until a handler suspends. A handler that does not suspend (a
   no-op or CPU-only job) ends right there: no deadline timer, nothing could have cancelled it.
3. A handler that suspends (it awaits real I/O) is finished by the *same* task, so any
   cancel scope it opened before suspending stays in its task. The group ends with it, so the
   shared scope is now its alone: it is given the job's deadline (bots/deadlines.py) and
   registered as running, so ``corral cancel`` reaches it. The jobs the worker ran before it
   are settled at once by another task: a finished job never waits for a slow one. (A handler
   that returns with a cancel scope of its own still entered, which anyio forbids, now leaves
   the rest of its group inside that scope: the error surfaces when the group's scope exits,
   and the bot stops, as it did before at the job's own scope.)
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

import time
from collections.abc import Callable, Generator
from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg

from corral.bots.attempt import Attempts, Ran
from corral.bots.config import BotConfig
from corral.core import fairness, tracing
from corral.core.errors import CorralError
from corral.core.handlers import Handler, JobContext, Registry
from corral.core.log import Logger
from corral.core.messages import Job, encode

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

    def __init__(self, attempts: Attempts, config: BotConfig, log: Logger) -> None:
        self.attempts = attempts
        self.log = log
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

    async def run(self, fn: Handler, job: Job, msg: Msg, on_suspend: Callable[[], None],
                  scope: anyio.CancelScope, started: float) -> Ran:
        """Run the handler to its end, as attempt 1 started at ``started``; ``on_suspend`` is called if
        it suspends, before this task waits for it (the caller lets other workers take what it would
        have taken).

        The handler runs inside ``scope`` from its first step, as on the full path (bots/attempt.py),
        so a timeout or ``corral cancel`` is anyio's level-triggered cancel: shields in the handler
        hold, a handler that swallows it is cancelled again at its next await, and a drain's cancel
        of the workers is never taken for the job's own. The caller enters the scope once around a
        group of runs (entering one per job cost a tenth of a busy bot's CPU): nothing in the group
        awaits until a handler suspends, and the group ends with the job that suspended, so from
        then on the scope is that job's alone. It is given the job's deadline and registered as
        running only once the handler suspends: before that nothing can cancel it. A cancel of the
        scope leaves here as anyio's cancellation, which the caller's ``with`` of the scope (a
        bots/deadlines.py ``job_scope``) catches; the outcome is then :meth:`cut_short`'s.
        """
        a = self.attempts
        self.runs += 1
        if self.log.debugging:
            self.log.debug("job.started", job=job.id, kind=job.kind, attempt=1)
        ctx = JobContext(job=job, attempt=1, bot=self.bot, js=a.js,
                         progress=lambda percent, message=None: a.report_progress(job.id, percent, message))
        with tracing.untraced(msg.headers):  # the trace id current, as on the full path
            try:
                coro = fn(job.args, ctx)
                step = coro.send(None)
            except StopIteration as stop:
                return self._done(job, started, stop.value)
            except Exception as e:  # noqa: BLE001 - the worker boundary: any handler error fails the attempt
                return _failed(job, started, e)
            on_suspend()
            self.suspended += 1
            due = a.deadlines.add(scope, max(0.0, job.timeout - (time.time() - started)))
            a.running[job.id] = scope
            try:
                return self._done(job, started, await _Resume(coro, step))
            except Exception as e:  # noqa: BLE001 - as above
                return _failed(job, started, e)
            finally:
                a.deadlines.discard(due, scope)
                a.running.pop(job.id, None)

    def cut_short(self, job: Job, started: float) -> Ran:
        """The outcome of a suspended job whose scope was cancelled: by ``corral cancel`` or its deadline."""
        if job.id in self.attempts.cancelled:
            return Ran(started, True, None)
        return Ran(started, False, f"timed out after {job.timeout}s")

    def _done(self, job: Job, started: float, value: Any) -> Ran:
        """A handler's return value as the run's encoded result, or why it cannot be one (as the
        full path words it: bots/attempt.py)."""
        try:
            data = encode(self.attempts._result(job, 1, started, value))
        except msgspec.EncodeError as e:
            return Ran(started, False, f"result is not JSON-encodable: {e}")
        except Exception as e:  # noqa: BLE001 - msgspec raises TypeError for a type it cannot encode
            return _failed(job, started, e)
        if len(data) > self.attempts.max_payload:
            return Ran(started, False, f"result is {len(data)} bytes, over the server's max_payload of {self.attempts.max_payload}")
        return Ran(started, False, None, data, value)


def _failed(job: Job, started: float, e: Exception) -> Ran:
    """A handler's exception as the run's error, worded as on the full path."""
    if isinstance(e, TimeoutError):
        return Ran(started, False, f"timed out after {job.timeout}s")
    return Ran(started, False, f"{type(e).__name__}: {e}")
