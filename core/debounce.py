"""Debounce: of the jobs submitted for one key within a window, only the last runs.

A debounced job is a one-shot server message schedule on
``corral.schedules.debounce.<key>`` in CORRAL_SCHEDULES, firing at the end of
its window into ``corral.schedules.fire.<queue>.<priority>`` (and so onto the
jobs stream, like a ``--delay`` job). It is published with ``Nats-Rollup: sub``:
storing it removes the key's previous message, so a newer job *replaces* the
waiting one and its window starts again (trailing-edge debounce). The server
does the replacing and the firing; no bot or timer process is involved, and a
restart of the server keeps the waiting job.

Nothing is dropped silently: the replaced job gets a ``superseded`` event
naming its replacement (a terminal state for `corral job`), and the new one a
``debounced`` event saying when it runs. So that every replaced job is known,
the publish is a compare-and-set on the key's subject
(``Nats-Expected-Last-Subject-Sequence``): two submitters racing on one key
cannot both believe they replaced the same job; the loser reads again.

The fire time is the submitter's clock plus the window, to the millisecond;
clocks that disagree shift the window by their difference.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from corral.core.connect import publish_error
from corral.core.errors import CorralError, ErrorCode, InvalidJobError, TransportError
from corral.core.history import subject_of, walk
from corral.core.messages import Event, EventType, Job, decode_job, encode
from corral.core.names import (
    DEBOUNCE_PREFIX, SCHEDULES_STREAM, check_token, debounce_subject, firing_subject, job_events_subject,
)

#: Compare-and-set attempts before giving up on a key many submitters are racing on.
RACE_TRIES = 20
#: Longest window accepted (a day): a longer wait is a schedule, not a debounce.
MAX_WINDOW = 86400.0


@dataclass(frozen=True)
class Debounced:
    """What a debounced submit did."""

    job_id: str
    key: str
    runs_at: float  #: Unix seconds, unless a newer job for the key arrives first
    replaced: str | None  #: the waiting job this one superseded, if any
    recorded: bool = True  #: both audit events were stored (False: the job waits, its events may be missing)


@dataclass(frozen=True)
class Waiting:
    """A job waiting out its debounce window."""

    key: str
    job: Job | None
    spec: str  #: ``@at`` the end of its window
    target: str  #: the firing subject it runs from


def check_window(seconds: float) -> float:
    """Raises InvalidJobError: not a positive number of seconds up to :data:`MAX_WINDOW`."""
    if not 0 < seconds <= MAX_WINDOW:
        raise InvalidJobError(f"debounce window {seconds:g}s: use more than 0 and at most {MAX_WINDOW:g} seconds")
    return seconds


def at_spec(when: float) -> str:
    """``@at`` with milliseconds (the server reads RFC 3339 with a fraction)."""
    return "@at " + dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _waiting(js: JetStreamContext, subject: str) -> tuple[int, str | None]:
    """(last sequence on the key's subject or 0, the id of the job waiting there or None)."""
    try:
        msg = await js.get_msg(SCHEDULES_STREAM, subject=subject, direct=True)
    except nats.js.errors.NotFoundError:
        return 0, None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise TransportError(f"no answer reading {subject}: is the server up and provisioned?") from e
    try:
        return msg.seq or 0, decode_job(msg.data or b"").id
    except InvalidJobError:
        return msg.seq or 0, None


async def debounce(js: JetStreamContext, job: Job, key: str, window: float, *, actor: str | None = None) -> Debounced:
    """Submit ``job`` to run ``window`` seconds from now, replacing the job waiting on ``key``.

    Raises:
        InvalidJobError: a bad key, window or job.
        TransportError: the server did not answer (the job may or may not wait; submitting again is safe).
        CorralError: too many submitters raced on the key.
    """
    check_token(key, "debounce key")
    check_window(window)
    job.validate()
    subject = debounce_subject(key)
    for _ in range(RACE_TRIES):
        last, replaced = await _waiting(js, subject)
        runs_at = time.time() + window
        headers = {
            "Nats-Schedule": at_spec(runs_at),
            "Nats-Schedule-Target": firing_subject(job.queue, job.priority),
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(last),
        }
        try:
            await js.publish(subject, encode(job), headers=headers, stream=SCHEDULES_STREAM)
        except nats.js.errors.APIError as e:
            if e.err_code == ErrorCode.STREAM_WRONG_LAST_SEQUENCE:
                continue  # another submitter (or the firing) changed the key: read again
            raise publish_error(e, subject) from e
        except Exception as e:  # translated once, here
            raise publish_error(e, subject) from e
        if replaced == job.id:
            replaced = None  # the same job submitted again: it only waits longer
        recorded = await _record(js, job, key, runs_at, replaced, actor)
        return Debounced(job.id, key, runs_at, replaced, recorded)
    raise CorralError(f"debounce key {key!r}: {RACE_TRIES} submitters raced on it at once; submit again")


async def _record(js: JetStreamContext, job: Job, key: str, runs_at: float, replaced: str | None, actor: str | None) -> bool:
    """The audit trail of a debounce: ``debounced`` for the new job, ``superseded`` for the one it replaced."""
    when = dt.datetime.fromtimestamp(runs_at, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    events = [(job.id, Event(type=EventType.DEBOUNCED, ts=time.time(), job_id=job.id, kind=job.kind, queue=job.queue,
                             correlation_id=job.correlation_id, actor=actor,
                             detail=f"debounce key {key}: runs at {when} UTC unless a newer job with this key arrives"))]
    if replaced is not None:
        events.append((replaced, Event(type=EventType.SUPERSEDED, ts=time.time(), job_id=replaced, actor=actor,
                                       detail=f"replaced by {job.id} (debounce key {key}) before its window ended; not run")))
    try:
        for job_id, event in events:
            await js.publish(job_events_subject(job_id), encode(event))
    except (CorralError, nats.errors.Error, TimeoutError):
        return False
    return True


async def waiting(js: JetStreamContext) -> list[Waiting]:
    """Every job waiting out a debounce window, by key."""
    out = []
    async for msg in walk(js, SCHEDULES_STREAM, f"{DEBOUNCE_PREFIX}*"):
        try:
            job = decode_job(msg.data or b"")
        except InvalidJobError:
            job = None
        h = msg.headers or {}
        out.append(Waiting(subject_of(msg)[len(DEBOUNCE_PREFIX):], job, h.get("Nats-Schedule", "?"), h.get("Nats-Schedule-Target", "?")))
    return out

