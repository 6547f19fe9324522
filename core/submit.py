"""Submitting jobs: one at a time, or many pipelined.

Every job is published with ``Nats-Msg-Id`` (its idempotency key, else its id),
so a retried submit inside the jobs stream's duplicate window (10 minutes) is
one job; ``Nats-Expected-Stream`` makes sure it lands in CORRAL_JOBS and not
in some other stream that happens to overlap the subject.

A full stream refuses a message whole: a job is either accepted (acknowledged)
or it is not, never half. :class:`SubmitSummary` says which, so resubmitting
the refused ones (or the whole input: duplicates are dropped) is safe.

**Batches.** :func:`submit_many` sends jobs bound for CORRAL_JOBS as JetStream atomic
batches of up to :data:`BATCH` (docs/nats-notes.md, "Atomic batch publish"): the server
stores a batch with one flush to disk instead of one fsync per job under
``sync_interval: always``. A batch is all or nothing, so its jobs are accepted together.
Each batch's answer is awaited before anything later is sent, so jobs land in the order
given, as one-at-a-time submits do. A batch the server refuses (a duplicate
``Nats-Msg-Id`` in it, a full stream, a store made before ``allow_atomic``) or leaves
unanswered is sent again one job at a time, where each job gets its own answer: a
duplicate is counted as one, a refusal names its job, and a batch that was in fact stored
comes back as duplicates. After a refusal for any reason but a duplicate the rest of the
call is sent one job at a time.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import stamina
from nats.js import JetStreamContext
from nats.js.api import PubAck

from corral.core.connect import TRANSIENT, publish_error
from corral.core.errors import ConfigError, CorralError, ErrorCode, StreamFullError
from corral.core.log import get_logger
from corral.core.messages import Job, encode
from corral.core import unique
from corral.core import tracing
from corral.core.publisher import AsyncPublisher
from corral.core.names import FAIR_STREAM, JOBS_STREAM, fair_subject, job_subject

#: Jobs per atomic batch in :func:`submit_many`; the server allows 1,000. Fewer than
#: :data:`MIN_BATCH` left at the end go one at a time.
BATCH = 200
MIN_BATCH = 16


@dataclass(frozen=True)
class Receipt:
    job_id: str
    seq: int
    duplicate: bool


@dataclass
class SubmitSummary:
    accepted: int = 0
    duplicates: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)  #: (index, job id, reason)

    @property
    def ok(self) -> bool:
        return not self.refused


def destination(job: Job) -> tuple[str, str]:
    """(subject, stream) a job is published to: its key's line in CORRAL_FAIR if it has a
    fairness key (core/fairness.py), else its queue and priority in CORRAL_JOBS."""
    if job.fairness_key:
        return fair_subject(job.queue, job.priority, job.fairness_key), FAIR_STREAM
    return job_subject(job.queue, job.priority), JOBS_STREAM


def _headers(job: Job, trace: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": job.dedupe_id, "Nats-Expected-Stream": destination(job)[1]}
    if trace:
        headers.update(trace)
    return headers


async def submit(js: JetStreamContext, job: Job, *, timeout: float = 5.0, retry_for: float = 10.0,
                 traceparent: str | None = None) -> Receipt:
    """Publish one job and wait for the stream's acknowledgement.

    The job carries the current span's trace context, or ``traceparent`` if given (core/tracing.py).

    A timeout is ambiguous (the job may have landed), so it is retried with the
    same ``Nats-Msg-Id`` for ``retry_for`` seconds: at most one job results.

    Raises:
        StreamFullError: the stream or store is full; the job was not accepted.
        TransportError: no acknowledgement within ``retry_for`` seconds.
    """
    job.validate()
    data = encode(job)
    subject = destination(job)[0]
    headers = _headers(job, tracing.inject({}, traceparent))
    if job.unique_key:
        await unique.hold(js, job)

    async def publish() -> PubAck:
        try:
            return await js.publish(subject, data, timeout=timeout, headers=headers)
        except Exception as e:  # translated once, here
            raise publish_error(e, subject) from e

    began = anyio.current_time()
    try:
        try:
            # The first try is made outside the retry loop: entering stamina's costs tens of
            # microseconds, a share of a job's enqueue-to-start latency at light load.
            ack = await publish()
        except TRANSIENT:
            # The retries share the one budget; stamina's first is immediate, as the old loop's
            # second try was not: harmless, the job's Nats-Msg-Id makes a repeat a duplicate.
            left = retry_for - (anyio.current_time() - began)
            if left <= 0:
                raise
            async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=left, wait_max=1.0):
                with attempt:
                    ack = await publish()
    except BaseException:
        if job.unique_key:
            await unique.release(js, job)
        raise
    return Receipt(job.id, ack.seq, bool(ack.duplicate))


async def submit_many(
    js: JetStreamContext,
    jobs: Iterable[Job] | AsyncIterable[Job],
    *,
    ack_timeout: float = 10.0,
    progress: Callable[[int], None] = lambda n: None,
    batching: bool = True,
) -> SubmitSummary:
    """Publish jobs pipelined: in atomic batches where they can be, else one at a time (nats-py
    keeps up to 4000 unacknowledged). ``batching`` False: one at a time only.

    Stops sending at the first full-stream refusal (everything after it would
    be refused too) and reports every job that was not accepted.
    """
    run = _Submission(js, ack_timeout, progress, batching)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.publisher.run_expiry)
        index = 0
        if isinstance(jobs, AsyncIterable):
            async for job in jobs:
                if run.stop:
                    break
                await run.add(index, job)
                index += 1
        else:
            for job in jobs:
                if run.stop:
                    break
                await run.add(index, job)
                index += 1
        await run.finish()
        tg.cancel_scope.cancel()
    run.summary.refused.sort()
    return run.summary


_Item = tuple[int, Job, str, bytes, dict[str, str]]  #: (index, job, subject, encoded job, headers)


class _Submission:
    """One :func:`submit_many` call: jobs gathered into batches, each job's fate in the summary."""

    def __init__(self, js: JetStreamContext, ack_timeout: float, progress: Callable[[int], None], batching: bool) -> None:
        self.js = js
        self.summary = SubmitSummary()
        self.publisher = AsyncPublisher(js, get_logger("submit"), ack_timeout=ack_timeout)
        self.ack_timeout = ack_timeout
        self.progress = progress
        self.batching = batching
        self.trace = tracing.inject({})  # every job of the call carries the caller's trace context
        self.stop = False
        self.pending: list[_Item] = []

    async def add(self, index: int, job: Job) -> None:
        job.validate()
        if job.unique_key:
            try:
                await unique.hold(self.js, job)
            except unique.DuplicateJobError as e:
                self._refuse(index, job, str(e))
                return
        subject, stream = destination(job)
        item = (index, job, subject, encode(job), _headers(job, self.trace))
        if not self.batching or stream != JOBS_STREAM:  # CORRAL_FAIR is no atomic stream
            await self._single(item)
            return
        self.pending.append(item)
        if len(self.pending) >= BATCH:
            await self._batch(self.pending)
            self.pending = []

    async def finish(self) -> None:
        """Send what is left and wait for every answer."""
        if len(self.pending) >= MIN_BATCH and self.batching:
            await self._batch(self.pending)
        else:
            for item in self.pending:
                await self._single(item)
        self.pending = []
        await self.publisher.flush(self.ack_timeout + 1)

    async def _single(self, item: _Item) -> None:
        fut = await self.publisher.publish(item[2], item[3], item[4])
        fut.add_done_callback(functools.partial(self._settle, item))

    async def _batch(self, items: list[_Item]) -> None:
        """One atomic batch, its answer awaited: only its last message asks for a reply, the
        acknowledgement of all. Refused or unanswered, its jobs go again one by one, in order."""
        fut = await self.publisher.publish_batch([(subject, data, headers) for _, _, subject, data, headers in items])
        await asyncio.wait([fut], timeout=self.ack_timeout)
        exc = (fut.exception() or None) if fut.done() and not fut.cancelled() else TimeoutError("no answer")
        if exc is None:
            self.summary.accepted += len(items)
            self.progress(self.summary.accepted + len(self.summary.refused))
            return
        # Only a duplicate inside a batch leaves batching worth trying for the rest of the call.
        if getattr(exc, "err_code", None) != ErrorCode.BATCH_DUPLICATE_MSG_ID:
            self.batching = False
        for item in items:
            if self.stop:
                self._refuse(item[0], item[1], "not sent: the stream refused an earlier job as full")
            else:
                await self._single(item)

    def _settle(self, item: _Item, fut: asyncio.Future) -> None:
        index, job, subject = item[0], item[1], item[2]
        exc = fut.exception() if not fut.cancelled() else TimeoutError("cancelled")
        if exc is None:
            self.summary.accepted += 1
            self.summary.duplicates += bool(fut.result().duplicate)
        else:
            # the publisher resolves a future with an Exception; anything else passes through as is
            err = publish_error(exc, subject) if isinstance(exc, Exception) else exc
            self.stop = self.stop or isinstance(err, StreamFullError)
            self.summary.refused.append((index, job.id, str(err) or type(err).__name__))
        self.progress(self.summary.accepted + len(self.summary.refused))

    def _refuse(self, index: int, job: Job, reason: str) -> None:
        self.summary.refused.append((index, job.id, reason))
        self.progress(self.summary.accepted + len(self.summary.refused))


def raise_for(summary: SubmitSummary) -> None:
    """Turn a summary with refusals into the error for the first of them."""
    if summary.refused:
        index, job_id, reason = summary.refused[0]
        raise CorralError(
            f"{len(summary.refused)} job(s) not accepted (first: #{index} {job_id}): {reason}"
        )


def parse_kv(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "name=x"]`` -> ``{"a": 1, "name": "x"}``.

    Raises:
        ConfigError: an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"job argument {pair!r} must look like key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
