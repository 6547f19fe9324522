"""One job's record: everything the streams hold about it, as `corral job` and the dashboard show it.

The one read model of a job: where it is (:func:`corral.core.lookup.locate`: its
result, events, schedule, or its message on the jobs stream), and its dead
letters (:func:`corral.core.dlq.dead_letters_of`, a read of the job's own DLQ
subject, never a walk of the whole stream). The CLI prints it, the dashboard's
job inspector draws it; neither assembles it itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js import JetStreamContext

from corral.core import lookup
from corral.core.dlq import DeadLetter, dead_letters_of
from corral.core.messages import Event, EventType, Job, JobResult, job_decoder
from corral.core.timeline import with_result

#: The :attr:`JobRecord.status` of a job with no sign of running or waiting (unknown, scheduled, unverified).
UNSEEN = "?"


@dataclass(frozen=True)
class JobRecord:
    """What is known of one job: its whereabouts, the job itself, events, result and dead letters."""

    job_id: str
    state: str  #: a :mod:`corral.core.lookup` state (``ended``, ``active``, ``pending``, ...)
    detail: str = ""  #: the ending, the schedule spec, or the subject it waits on
    job: Job | None = None  #: from the jobs stream, the result or a dead letter, whichever has it
    #: The audit trail, with the started/succeeded its result implies (core/timeline.py).
    events: list[Event] = field(default_factory=list)
    result: JobResult | None = None
    dead: list[DeadLetter] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """Still on the jobs stream, not taken by a bot yet."""
        return self.state == lookup.PENDING

    @property
    def status(self) -> str:
        """One word for where the job stands: ``succeeded``, ``dead``, its latest lifecycle event, ``started``, ``pending``.

        A first delivery records nothing while it runs (progress aside), so an active job with no
        lifecycle event is ``started``.
        """
        if self.result is not None:
            return "succeeded"
        if self.dead:
            return "dead"
        lifecycle = [e for e in self.events if e.type != EventType.PROGRESS]
        if lifecycle:
            return str(lifecycle[-1].type)
        return {lookup.ACTIVE: lookup.TAKEN, lookup.PENDING: "pending"}.get(self.state, UNSEEN)

    @property
    def known(self) -> bool:
        return self.state != lookup.UNKNOWN or bool(self.dead)

    @property
    def trace_id(self) -> str | None:
        """The W3C trace id the job ran under (core/tracing.py), from its result or any of its events."""
        if self.result is not None and self.result.trace_id:
            return self.result.trace_id
        return next((e.trace_id for e in self.events if e.trace_id), None)

    def as_dict(self) -> dict[str, Any]:
        """The record as `corral job --json` prints it."""
        return {
            "id": self.job_id,
            "state": self.state,
            "detail": self.detail,
            "trace_id": self.trace_id,
            "events": [msgspec.to_builtins(e) for e in self.events],
            "result": msgspec.to_builtins(self.result) if self.result else None,
            "dead_letters": [{"seq": d.seq, "reason": d.reason, "attempts": d.attempts, "bots": d.bots, "dead_at": d.dead_at}
                             for d in self.dead],
        }


def _job_of(where: lookup.Whereabouts, dead: list[DeadLetter]) -> Job | None:
    if where.job is not None:
        return where.job
    if where.result is not None:
        return where.result.job
    for d in dead:
        try:
            return job_decoder.decode(d.data)
        except msgspec.DecodeError:
            continue  # a dead letter keeps the original bytes, valid or not
    return None


async def read_record(js: JetStreamContext, job_id: str, scan_limit: int = lookup.SCAN_LIMIT) -> JobRecord:
    """The job's record (``scan_limit`` bounds the search of waiting jobs, as in :func:`lookup.locate`).

    Raises:
        InvalidJobError: the id is not a valid job id.
        TransportError: the server did not answer.
    """
    where = await lookup.locate(js, job_id, scan_limit)
    dead = await dead_letters_of(js, job_id)
    job = _job_of(where, dead)
    if job is None and where.state == lookup.ACTIVE:
        job = await lookup.queued_job(js, job_id, scan_limit)  # a running job stays on the stream until acked
    # A first delivery's success leaves only its result: its started/succeeded are derived from it.
    events = with_result(where.events, where.result)
    return JobRecord(job_id, where.state, where.detail, job, events, where.result, dead)
