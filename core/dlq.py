"""The dead-letter stream: moving jobs in, listing them, replaying and purging.

A dead letter's body is the job's original bytes, untouched (even when they are
not a valid job); why and how it died travel in ``Corral-*`` headers. Moving in
is publish-then-remove: the dead letter is stored (and acknowledged) before the
job leaves the work queue, and its ``Nats-Msg-Id`` (``dlq-<jobs stream seq>``)
makes a second move of the same message (a redelivery racing the advisory
listener) a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from corral.core.connect import publish_error
from corral.core.history import walk
from corral.core.messages import DeadLetterHeaders as H
from corral.core.messages import Event, EventType, encode, job_decoder
from corral.core.names import (
    DLQ_STREAM, JOBS_STREAM, dlq_job_subject, dlq_queue_subject, dlq_subject, job_events_subject, job_subject, ops_events_subject,
)


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    job_id: str
    queue: str
    reason: str
    attempts: int
    bots: str
    dead_at: float
    source_subject: str
    data: bytes

    @property
    def kind(self) -> str:
        try:
            return job_decoder.decode(self.data).kind
        except msgspec.DecodeError:
            return "?"


async def move_to_dlq(
    js: JetStreamContext,
    *,
    data: bytes,
    queue: str,
    job_id: str,
    reason: str,
    attempts: int,
    source_subject: str,
    source_seq: int,
    bots: Sequence[str] = (),
) -> None:
    """Store a dead letter and wait for its acknowledgement (the caller then removes the job).

    Raises:
        StreamFullError, TransportError: it was not stored; the job must stay where it is.
    """
    headers = {
        "Nats-Msg-Id": f"dlq-{source_seq}",
        H.REASON: reason[:2000].replace("\r", " ").replace("\n", " "),
        H.ATTEMPTS: str(attempts),
        H.JOB_ID: job_id,
        H.QUEUE: queue,
        H.SOURCE_SUBJECT: source_subject,
        H.SOURCE_SEQ: str(source_seq),
        H.DEAD_AT: f"{time.time():.6f}",
    }
    if bots:
        headers[H.BOTS] = ",".join(bots)
    try:
        await js.publish(dlq_subject(queue, job_id), data, headers=headers, timeout=10)
    except Exception as e:  # translated once, here at the boundary
        raise publish_error(e, dlq_subject(queue, job_id)) from e


def _record(msg) -> DeadLetter:
    h = msg.headers or {}
    return DeadLetter(
        seq=msg.seq,
        job_id=h.get(H.JOB_ID, "?"),
        queue=h.get(H.QUEUE, "?"),
        reason=h.get(H.REASON, ""),
        attempts=int(h.get(H.ATTEMPTS, 0) or 0),
        bots=h.get(H.BOTS, ""),
        dead_at=float(h.get(H.DEAD_AT, 0) or 0),
        source_subject=h.get(H.SOURCE_SUBJECT, ""),
        data=msg.data or b"",
    )


async def list_dead(js: JetStreamContext, *, queue: str | None = None, limit: int | None = None,
                    match: Callable[[DeadLetter], bool] | None = None) -> list[DeadLetter]:
    """Dead letters, oldest first, optionally filtered."""
    out: list[DeadLetter] = []
    async for msg in walk(js, DLQ_STREAM, dlq_queue_subject(queue)):
        rec = _record(msg)
        if match is None or match(rec):
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
    return out


async def dead_letters_of(js: JetStreamContext, job_id: str) -> list[DeadLetter]:
    """The job's dead letters, oldest first (one per time it died; replayed ones are gone).

    A filtered walk over the job's own subject ``corral.dlq.*.<job_id>``: the server
    skips every other job's dead letters, so the cost does not grow with the stream.
    """
    return [_record(msg) async for msg in walk(js, DLQ_STREAM, dlq_job_subject(job_id))]


async def get_dead(js: JetStreamContext, seq: int) -> DeadLetter | None:
    try:
        return _record(await js.get_msg(DLQ_STREAM, seq=seq, direct=True))
    except nats.js.errors.NotFoundError:
        return None


async def replay(js: JetStreamContext, letters: list[DeadLetter], *, actor: str, progress: Callable[[int], None] = lambda n: None) -> int:
    """Put dead letters back on the jobs stream as fresh deliveries, then remove them.

    ``Nats-Msg-Id: replay-<dlq seq>`` makes a repeated replay of the same letter
    one job. Returns how many were replayed.
    """
    done = 0
    for rec in letters:
        subject = rec.source_subject or job_subject(rec.queue)
        try:
            await js.publish(subject, rec.data, headers={"Nats-Msg-Id": f"replay-{rec.seq}"}, stream=JOBS_STREAM)
        except Exception as e:
            raise publish_error(e, subject) from e
        await _delete(js, rec.seq)
        event = Event(type=EventType.REPLAYED, ts=time.time(), job_id=rec.job_id, queue=rec.queue, actor=actor, detail=f"dlq seq {rec.seq}")
        if rec.job_id != "?" and not rec.job_id.startswith("invalid-"):
            await js.publish(job_events_subject(rec.job_id), encode(event))
        done += 1
        progress(done)
    if letters:
        summary = Event(type=EventType.OPERATOR, ts=time.time(), actor=actor, detail=f"replayed {done} dead letters")
        await js.publish(ops_events_subject("replay"), encode(summary))
    return done


async def purge(js: JetStreamContext, letters: list[DeadLetter], *, actor: str, progress: Callable[[int], None] = lambda n: None) -> int:
    """Delete dead letters for good; the purge itself is recorded as an operator event."""
    done = 0
    for rec in letters:
        await _delete(js, rec.seq)
        done += 1
        progress(done)
    event = Event(type=EventType.PURGED, ts=time.time(), actor=actor, detail=f"purged {done} dead letters")
    await js.publish(ops_events_subject("purge"), encode(event))
    return done


async def _delete(js: JetStreamContext, seq: int) -> None:
    try:
        await js.delete_msg(DLQ_STREAM, seq)
    except nats.js.errors.NotFoundError:
        pass  # already gone: another operator replayed or purged it
