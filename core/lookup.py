"""Where a job is now: ended, under way, waiting on the jobs stream, scheduled, or unknown to corral.

`corral job`, `corral cancel` and `job --follow` need the same answer before
they act: a cancel of an id nobody submitted, or of a job that already ended,
does nothing and must say so; a job submitted with ``--delay`` exists only as a
schedule until it fires, and one no bot has taken yet only as a message on the
jobs stream, with no event at all.

Finding a waiting job means reading the jobs stream with direct gets, one
message at a time, from the first unconsumed sequence (the stream keeps acked
jobs until the purger removes them, core/purge.py).
Past :data:`SCAN_LIMIT` waiting jobs the search stops and the answer is
``unverified`` rather than a slow, certain one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from corral.core.backlog import unfinished
from corral.core.errors import MissingResourceError, TransportError
from corral.core.purge import first_unconsumed
from corral.core.history import job_events, job_result, seq_of, walk
from corral.core.messages import TERMINAL_EVENTS, Event, EventType, Job, JobResult, job_decoder
from corral.core.names import (
    CANCEL_BUCKET, FAIR_STREAM, FAIR_SUBJECT, JOBS_STREAM, JOBS_SUBJECT, SCHEDULES_STREAM, cancel_key_subject, check_token,
    consumer_name, kv_stream, parse_job_subject, schedule_subject,
)

SCAN_LIMIT = 20_000  #: waiting jobs read at most when looking for one that has no event yet

#: Event types after which a job does nothing more, unless an operator replays it.
#: The one set of event types that end a job (a DUPLICATE is a redelivery of one already recorded).
ENDED = TERMINAL_EVENTS

ENDED_STATE = "ended"  #: it succeeded, died, was cancelled or expired (``detail`` says which)
ACTIVE = "active"  #: it has events and has not ended: running, retrying, throttled or replayed
PENDING = "pending"  #: on the jobs stream, not taken by a bot yet
SCHEDULED = "scheduled"  #: a delayed or timed job, waiting for its schedule to fire
UNVERIFIED = "unverified"  #: no event, and too many waiting jobs to search them all
UNKNOWN = "unknown"  #: no record anywhere: never submitted, or past every stream's retention
#: The detail of an ``active`` job with no event yet: a bot holds its first delivery.
TAKEN = "started"


class _JobId(msgspec.Struct):
    id: str = ""


_id_decoder = msgspec.json.Decoder(_JobId)


@dataclass
class Whereabouts:
    job_id: str
    state: str
    detail: str = ""  #: the ending (``succeeded``, ``dead``...), the schedule spec, or the subject it waits on
    events: list[Event] = field(default_factory=list)
    result: JobResult | None = None
    job: Job | None = None  #: the waiting job itself, when it is PENDING

    @property
    def known(self) -> bool:
        return self.state != UNKNOWN


def ending(events: list[Event]) -> str | None:
    """The event type that ended the job, or None while it may still run (a replay revives it)."""
    ended = None
    for e in events:
        if e.type in ENDED:
            ended = str(e.type)
        elif e.type == EventType.REPLAYED:
            ended = None
    return ended


async def _direct(js: JetStreamContext, stream: str, subject: str):
    try:
        return await js.get_msg(stream, subject=subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise TransportError(f"no answer reading {stream} ({subject})") from e


async def schedule_of(js: JetStreamContext, name: str) -> str | None:
    """The spec (``@at ...``) of the schedule ``name`` (a ``--delay`` job's is its id), or None."""
    msg = await _direct(js, SCHEDULES_STREAM, schedule_subject(name))
    return (msg.headers or {}).get("Nats-Schedule", "?") if msg is not None and msg.data else None


async def cancel_requested(js: JetStreamContext, job_id: str) -> bool:
    """Whether a cancellation of the job is already on record (requests expire after a day)."""
    msg = await _direct(js, kv_stream(CANCEL_BUCKET), cancel_key_subject(job_id))
    return msg is not None and bool(msg.data) and (msg.headers or {}).get("KV-Operation") not in ("DEL", "PURGE")


async def _waiting_on(js: JetStreamContext, job_id: str, limit: int) -> RawStreamMsg | str | None:
    """The job's message on the jobs stream, None if absent, or "" if there are too many to search."""
    try:
        if await unfinished(js) > limit:
            return ""
        start = await first_unconsumed(js._nc)
    except (nats.js.errors.NotFoundError, MissingResourceError):
        return None
    needle = job_id.encode()
    async for msg in walk(js, JOBS_STREAM, JOBS_SUBJECT, start_seq=start, limit=limit):
        if needle not in (msg.data or b""):
            continue  # a cheap pre-filter: most waiting jobs are someone else's
        try:
            if _id_decoder.decode(msg.data or b"").id == job_id:
                return msg
        except msgspec.DecodeError:
            continue
    return None


async def _waiting_fair(js: JetStreamContext, job_id: str, limit: int) -> RawStreamMsg | None:
    """The job's message in its fairness key's line (core/fairness.py), before the dispatcher moved it."""
    needle = job_id.encode()
    try:
        async for msg in walk(js, FAIR_STREAM, FAIR_SUBJECT, limit=limit):
            if needle in (msg.data or b"") and (_decoded(msg.data) or Job(kind="")).id == job_id:
                return msg
    except (nats.js.errors.NotFoundError, MissingResourceError):
        return None
    return None


async def queued_job(js: JetStreamContext, job_id: str, limit: int = SCAN_LIMIT) -> Job | None:
    """The job as it sits on the jobs stream (waiting, or running and not yet acknowledged), or None."""
    waiting = await _waiting_on(js, job_id, limit)
    return _decoded(waiting.data) if isinstance(waiting, RawStreamMsg) else None


def _decoded(data: bytes | None) -> Job | None:
    try:
        return job_decoder.decode(data or b"")
    except msgspec.DecodeError:
        return None


async def locate(js: JetStreamContext, job_id: str, scan_limit: int = SCAN_LIMIT) -> Whereabouts:
    """Where the job is, looking at the cheap records (result, events, schedule) before the jobs stream.

    Raises:
        InvalidJobError: the id is not a valid job id.
        TransportError: the server did not answer.
    """
    check_token(job_id, "job id")
    events = await job_events(js, job_id)
    result = await job_result(js, job_id)
    if result is not None:
        return Whereabouts(job_id, ENDED_STATE, str(EventType.SUCCEEDED), events, result)
    if (ended := ending(events)) is not None:
        return Whereabouts(job_id, ENDED_STATE, ended, events)
    if events:
        return Whereabouts(job_id, ACTIVE, str(events[-1].type), events)
    if (spec := await schedule_of(js, job_id)) is not None:
        return Whereabouts(job_id, SCHEDULED, spec)
    waiting = await _waiting_on(js, job_id, scan_limit)
    if waiting == "":
        return Whereabouts(job_id, UNVERIFIED, f"more than {scan_limit} jobs are waiting; not all were searched")
    if waiting is None:
        waiting = await _waiting_fair(js, job_id, scan_limit)
    if isinstance(waiting, RawStreamMsg):
        if await _taken(js, waiting):
            return Whereabouts(job_id, ACTIVE, TAKEN, job=_decoded(waiting.data))
        return Whereabouts(job_id, PENDING, waiting.subject or "", job=_decoded(waiting.data))
    return Whereabouts(job_id, UNKNOWN)


async def _taken(js: JetStreamContext, msg: RawStreamMsg) -> bool:
    """Whether a bot holds the waiting message: its consumer has delivered it, and it is not acked yet.

    A first delivery records no event until it ends (core/timeline.py), so a running job can
    look like a waiting one; the consumer's delivered sequence tells them apart.
    """
    place = parse_job_subject(msg.subject or "")
    if place is None:
        return False
    try:
        info = await js.consumer_info(JOBS_STREAM, consumer_name(*place))
    except nats.js.errors.NotFoundError:
        return False
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise TransportError(f"no answer reading the consumer of {msg.subject}") from e
    return info.delivered is not None and (info.delivered.stream_seq or 0) >= seq_of(msg)
