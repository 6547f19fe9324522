"""Turning stream messages into table rows: pure functions, no I/O.

The live ingest (durable consumers) and the rebuild (ephemeral consumers) both
go through :func:`rows_for`, so the two produce identical tables from the same
messages. Every row's key comes from the message itself (a stream sequence, or
the job id the result fence makes unique), never from arrival order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.msg import Msg

from corral.core.messages import DeadLetterHeaders as H
from corral.core.messages import Job, event_decoder, job_decoder, result_decoder
from corral.core.names import DLQ_STREAM, EVENTS_STREAM, RESULTS_STREAM, parse_result_subject

_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Delivered:
    """What the ledger needs of one stream message. ``stream_us`` is the stream's store time, Unix µs."""

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    stream_us: int

    @classmethod
    def from_msg(cls, msg: Msg) -> Delivered:
        md = msg.metadata
        stored_us = round(md.timestamp.timestamp() * 1_000_000)
        return cls(md.stream, md.sequence.stream, msg.subject, msg.data or b"", dict(msg.headers or {}), stored_us)


@dataclass
class Rows:
    """Rows for one batch, per table name, plus the bots whose summary must be recomputed."""

    tables: dict[str, list[tuple]] = field(default_factory=lambda: defaultdict(list))
    bots: set[str] = field(default_factory=set)
    skipped: int = 0  #: undecodable messages (logged and acked: redelivery cannot fix them)

    def __len__(self) -> int:
        return sum(len(v) for v in self.tables.values())


def us(seconds: float | None) -> int | None:
    """Unix seconds to Unix microseconds (the form TIMESTAMP columns are loaded in)."""
    return None if seconds is None else round(seconds * 1_000_000)


def _json_text(value: Any) -> str | None:
    try:
        return _json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return None


def job_row(job: Job) -> tuple:
    return (
        job.id, job.kind, job.queue, job.priority, us(job.created_at or None), job.timeout, job.max_attempts,
        job.idempotency_key, job.correlation_id, _json_text(job.args), job.v,
    )


def _add_result(rows: Rows, m: Delivered) -> None:
    r = result_decoder.decode(m.data)
    # The subject names the job and its writer (the bot's credentials allow only its own name there),
    # so they are taken from it; a result of the previous layout names only the job.
    job_id, bot = parse_result_subject(m.subject) or (r.job_id, None)
    rows.tables["results"].append((
        job_id, m.seq, m.stream_us, r.kind, r.queue, bot or r.bot, r.incarnation, r.attempt,
        us(r.started_at), us(r.finished_at), r.finished_at - r.started_at, _json_text(r.value), r.trace_id,
    ))
    if r.job is not None:
        rows.tables["jobs"].append(job_row(r.job))


def _add_event(rows: Rows, m: Delivered) -> None:
    e = event_decoder.decode(m.data)
    rows.tables["events"].append((
        m.seq, m.stream_us, m.subject, str(e.type), us(e.ts), e.job_id, e.bot, e.incarnation, e.attempt,
        e.kind, e.queue, e.correlation_id, e.state, e.detail, e.actor, e.duration, e.trace_id,
    ))
    if e.type == "bot_state" and e.bot:
        rows.bots.add(e.bot)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _add_dead_letter(rows: Rows, m: Delivered) -> None:
    h = m.headers
    try:
        job: Job | None = job_decoder.decode(m.data)
    except msgspec.DecodeError:
        job = None  # an invalid payload: the letter is recorded, the job is not
    rows.tables["dead_letters"].append((
        m.seq, m.stream_us, m.subject, h.get(H.JOB_ID), h.get(H.QUEUE), job.kind if job else None,
        h.get(H.REASON), _int(h.get(H.ATTEMPTS)), h.get(H.BOTS), us(_float(h.get(H.DEAD_AT))),
        h.get(H.SOURCE_SUBJECT), _int(h.get(H.SOURCE_SEQ)), m.data,
    ))
    if job is not None:
        rows.tables["jobs"].append(job_row(job))


_BUILDERS = {RESULTS_STREAM: _add_result, EVENTS_STREAM: _add_event, DLQ_STREAM: _add_dead_letter}


def rows_for(messages: list[Delivered]) -> Rows:
    """The rows a batch of messages (from any of the three streams) adds to the ledger."""
    rows = Rows()
    for m in messages:
        try:
            _BUILDERS[m.stream](rows, m)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            rows.skipped += 1
    return rows
