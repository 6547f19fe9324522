"""Submitting jobs: one at a time, or many pipelined.

Every job is published with ``Nats-Msg-Id`` (its idempotency key, else its id),
so a retried submit inside the jobs stream's duplicate window (10 minutes) is
one job; ``Nats-Expected-Stream`` makes sure it lands in CORRAL_JOBS and not
in some other stream that happens to overlap the subject.

A full stream refuses a message whole: a job is either accepted (acknowledged)
or it is not, never half. :class:`SubmitSummary` says which, so resubmitting
the refused ones (or the whole input: duplicates are dropped) is safe.
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

from corral.core.connect import TRANSIENT, publish_error
from corral.core.errors import ConfigError, CorralError, StreamFullError
from corral.core.log import get_logger
from corral.core.messages import Job, encode
from corral.core import unique
from corral.core import tracing
from corral.core.publisher import AsyncPublisher
from corral.core.names import FAIR_STREAM, JOBS_STREAM, fair_subject, job_subject


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
    try:
        async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=retry_for, wait_max=1.0):
            with attempt:
                try:
                    ack = await js.publish(subject, data, timeout=timeout, headers=headers)
                except Exception as e:  # translated once, here
                    raise publish_error(e, subject) from e
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
) -> SubmitSummary:
    """Publish jobs pipelined (nats-py keeps up to 4000 unacknowledged).

    Stops sending at the first full-stream refusal (everything after it would
    be refused too) and reports every job that was not accepted.
    """
    summary = SubmitSummary()
    publisher = AsyncPublisher(js, get_logger("submit"), ack_timeout=ack_timeout)
    trace = tracing.inject({})  # every job of the batch carries the caller's trace context
    stop = False

    def settle(index: int, job: Job, fut: asyncio.Future) -> None:
        nonlocal stop
        exc = fut.exception() if not fut.cancelled() else TimeoutError("cancelled")
        if exc is None:
            summary.accepted += 1
            summary.duplicates += bool(fut.result().duplicate)
        else:
            # the publisher resolves a future with an Exception; anything else passes through as is
            err = publish_error(exc, destination(job)[0]) if isinstance(exc, Exception) else exc
            stop = stop or isinstance(err, StreamFullError)
            summary.refused.append((index, job.id, str(err) or type(err).__name__))
        progress(summary.accepted + len(summary.refused))

    async def send(index: int, job: Job) -> None:
        job.validate()
        if job.unique_key:
            try:
                await unique.hold(js, job)
            except unique.DuplicateJobError as e:
                summary.refused.append((index, job.id, str(e)))
                progress(summary.accepted + len(summary.refused))
                return
        fut = await publisher.publish(destination(job)[0], encode(job), _headers(job, trace))
        fut.add_done_callback(functools.partial(settle, index, job))

    async with anyio.create_task_group() as tg:
        tg.start_soon(publisher.run_expiry)
        index = 0
        if isinstance(jobs, AsyncIterable):
            async for job in jobs:
                if stop:
                    break
                await send(index, job)
                index += 1
        else:
            for job in jobs:
                if stop:
                    break
                await send(index, job)
                index += 1
        await publisher.flush(ack_timeout + 1)
        tg.cancel_scope.cancel()
    summary.refused.sort()
    return summary


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
