"""Reading back what the streams recorded: a job's events, its result, stream walks.

All reads are direct gets (``allow_direct`` is on for every corral stream), so
they need no consumer and never disturb the bots' work queue.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from corral.core.errors import TransportError
from corral.core.messages import Event, EventType, JobResult, event_decoder, result_decoder
from corral.core.jsapi import api
from corral.core.names import (
    EVENTS_STREAM, RESULTS_STREAM, RESULTS_SUBJECT, job_events_subject, job_results_subject, legacy_result_subject,
    parse_result_subject, stream_op,
)


async def walk(js: JetStreamContext, stream: str, subject: str, start_seq: int = 1,
               limit: int | None = None) -> AsyncIterator[RawStreamMsg]:
    """Yield the stream's messages on ``subject`` (wildcards allowed) from ``start_seq`` on.

    Raises:
        TransportError: the server did not answer.
    """
    seq, n = max(start_seq, 1), 0
    while limit is None or n < limit:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
        except nats.js.errors.NotFoundError:
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            raise TransportError(f"no answer reading {stream} ({subject})") from e
        yield msg
        n += 1
        seq = seq_of(msg) + 1


def seq_of(msg: RawStreamMsg) -> int:
    """A stored message's sequence: a direct get always carries one, though nats-py types it optional."""
    assert msg.seq is not None, "a direct get always carries Nats-Sequence"
    return msg.seq


def subject_of(msg: RawStreamMsg) -> str:
    """A stored message's subject: a direct get always carries one, though nats-py types it optional."""
    assert msg.subject is not None, "a direct get always carries Nats-Subject"
    return msg.subject


async def job_events(js: JetStreamContext, job_id: str) -> list[Event]:
    """Every event recorded for a job, oldest first (undecodable ones are skipped)."""
    events = []
    async for msg in walk(js, EVENTS_STREAM, job_events_subject(job_id)):
        try:
            events.append(event_decoder.decode(msg.data or b""))
        except msgspec.DecodeError:
            continue
    return events


async def job_result(js: JetStreamContext, job_id: str) -> JobResult | None:
    """The job's one recorded result, or None (the one reader of "the result of job X")."""
    msg = await result_message(js, job_id)
    if msg is None:
        return None
    result = result_decoder.decode(msg.data or b"")
    # The writer is the subject's last token, which only that bot's credentials may write; the body's
    # `bot` is whatever the writer put there.
    parsed = parse_result_subject(subject_of(msg))
    if parsed is not None and parsed[1] is not None and parsed[1] != result.bot:
        result = msgspec.structs.replace(result, bot=parsed[1])
    return result


async def result_message(js: JetStreamContext, job_id: str) -> RawStreamMsg | None:
    """The stored message of the job's result, whichever bot wrote it, or None.

    The fence admits one message under ``corral.results.<job>.*``, so the last one there is the
    result. A result of the previous layout (``corral.results.<job>``, no writer token) is read
    when there is none: those stay in the stream until they age out (max_age, 7 days).

    Raises:
        TransportError: the server did not answer.
    """
    for subject in (job_results_subject(job_id), legacy_result_subject(job_id)):
        msg = await last_by_subject(js, RESULTS_STREAM, subject)
        if msg is not None:
            return msg
    return None


async def last_by_subject(js: JetStreamContext, stream: str, subject: str) -> RawStreamMsg | None:
    """The last message on ``subject`` (wildcards allowed), by one direct get, or None.

    The request names the subject in its body: nats-py's ``get_msg`` puts it in the request
    subject, where a wildcard is not allowed.

    Raises:
        TransportError: the server did not answer.
    """
    body = json.dumps({"last_by_subj": subject}).encode()
    try:
        resp = await js._nc.request(f"{js._prefix}.DIRECT.GET.{stream}", body, timeout=js._timeout)
        return js._lift_msg_to_raw_msg(resp)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise TransportError(f"no answer reading {stream} ({subject})") from e


async def results_per_job(js: JetStreamContext) -> dict[str, int]:
    """How many results each job has stored, under any bot and either layout (the fence allows one).

    One stream-info request per page of subjects, not one read per result: judges use it to
    count duplicates (a second message for a job, whichever bot wrote it) and strays.

    Raises:
        TransportError: the server did not answer.
    """
    counts: dict[str, int] = {}
    offset = 0
    while True:
        info = await api(js._nc, stream_op("INFO", RESULTS_STREAM), {"subjects_filter": RESULTS_SUBJECT, "offset": offset})
        subjects = info["state"].get("subjects") or {}
        for subject, n in subjects.items():
            parsed = parse_result_subject(subject)
            key = parsed[0] if parsed else subject
            counts[key] = counts.get(key, 0) + n
        offset += len(subjects)
        if not subjects or offset >= info.get("total", 0):
            return counts


def throttled_deliveries(events: list[Event]) -> int:
    """How many of the job's deliveries were throttled by its kind's limits (since its last replay).

    Those deliveries never ran, so they are not attempts: a delivery's attempt number is
    ``num_delivered`` minus this count. A replayed job is a new message whose deliveries count
    from 1 again, so throttles before the replay are not subtracted.
    """
    count = 0
    for e in events:
        if e.type == EventType.REPLAYED:
            count = 0
        elif e.type == EventType.THROTTLED:
            count += 1
    return count


def _since_replay(events: list[Event]) -> list[Event]:
    """The events of the job's current life: an operator's replay starts a new one."""
    last = max((i for i, e in enumerate(events) if e.type == EventType.REPLAYED), default=-1)
    return events[last + 1:]


def first_delivery_unrecorded(events: list[Event], delivered: int | None = None) -> bool:
    """Whether the job's first delivery (since its last replay) started and left no trace.

    A first delivery records nothing until it ends: no ``started`` (bots/attempt.py), and on
    success no ``succeeded`` either (its result is the record). If it ends any other way it
    records that (failed, throttled, handed back...), every one numbered attempt 1. So once a
    later delivery exists (``delivered`` > 1, or the trail holds a later attempt) and nothing is
    numbered 1, the first delivery died holding the job with no outcome: an unrecorded start.
    Pass the trail with its result merged in (core/timeline.py): a success accounts for it.
    """
    current = _since_replay(events)
    attempts = {e.attempt for e in current if e.attempt}
    if 1 in attempts:
        return False
    later = delivered > 1 if delivered is not None else bool(attempts)
    return later


def attempts_made(events: list[Event], delivered: int | None = None) -> int:
    """How many of the job's deliveries (since its last replay) became attempts: they started or failed.

    A delivery that never started is not an attempt: a limit throttled it, or the bot holding it
    could not read the job's history (a stream without a leader during a partition or failover)
    and left it for redelivery. Counting deliveries instead (``num_delivered``) charged those to
    the job and dead-lettered innocent work after a partition. A redelivered start is recorded
    before the handler runs (its ``started`` event is confirmed), so no redelivered attempt is
    missed; a first delivery records no ``started``, and one that died is inferred
    (:func:`first_delivery_unrecorded`; ``delivered`` is the delivery asking).
    """
    made: set[int] = set()
    for e in _since_replay(events):
        if e.type in (EventType.STARTED, EventType.FAILED) and e.attempt:
            made.add(e.attempt)
    if first_delivery_unrecorded(events, delivered):
        made.add(1)
    return len(made)


@dataclass(frozen=True, order=True)
class Death:
    """A delivery that started and never reported an outcome."""

    attempt: int
    bot: str  #: "?" for a first delivery that left no trace (its bot is unknown)
    isolated: bool  #: it ran alone on its bot, so the death is attributable to this job


UNKNOWN_BOT = "?"


def deaths(events: list[Event], delivered: int | None = None) -> list[Death]:
    """Each delivery that started and never reported an outcome, by attempt.

    Those are the deliveries whose bot died (or froze past its ack deadline)
    holding the job: the evidence for quarantining a poison job. Only
    deliveries since the job's last replay count. A throttled delivery records
    ``throttled`` and never ``started``, so it is never counted here. A first
    delivery that left no trace (:func:`first_delivery_unrecorded`) is a death
    by an unknown bot, beside other jobs: a first delivery never runs alone.
    """
    outcomes = {EventType.SUCCEEDED, EventType.FAILED, EventType.DEAD, EventType.HANDED_BACK, EventType.DUPLICATE}
    started: dict[tuple[int | None, str | None], Event] = {}
    for e in _since_replay(events):
        key = (e.attempt, e.incarnation)
        if e.type == EventType.STARTED:
            started[key] = e
        elif e.type in outcomes:
            started.pop(key, None)
    found = [Death(e.attempt or 0, e.bot or UNKNOWN_BOT, e.isolated) for e in started.values()]
    if first_delivery_unrecorded(events, delivered):
        found.append(Death(1, UNKNOWN_BOT, False))
    return sorted(found)


def deliveries_without_outcome(events: list[Event]) -> list[tuple[int, str]]:
    """(attempt, bot) of each delivery that started and never reported an outcome (see :func:`deaths`)."""
    return [(d.attempt, d.bot) for d in deaths(events)]


def bots_that_ran(events: list[Event]) -> list[str]:
    """The bots that started the job since its last replay, sorted (a dead letter names them)."""
    return sorted({e.bot for e in _since_replay(events) if e.type == EventType.STARTED and e.bot})


def last_span(events: list[Event]) -> tuple[str, str] | None:
    """(trace id, span id) of the latest attempt that recorded a span: a retry's span links to it."""
    for e in reversed(events):
        if e.type in (EventType.STARTED, EventType.FAILED) and e.trace_id and e.span_id:
            return e.trace_id, e.span_id
    return None
