"""Delayed, scheduled and periodic jobs, on JetStream's own message schedules (nats-server 2.12+/2.14+).

A schedule is one message on ``corral.schedules.defs.<name>`` in the
CORRAL_SCHEDULES stream, carrying the job as its body and two headers:
``Nats-Schedule`` (when: ``@at 2026-11-23T18:00:00Z``, ``@every 10m``, or a
6-field cron such as ``0 */10 * * * *``) and ``Nats-Schedule-Target``
(``corral.schedules.fire.<queue>.<priority>``). The server publishes the body
to the target at each firing, and CORRAL_JOBS sources the firings onto
``corral.jobs.<queue>.<priority>`` (a subject transform).

Why a second stream: the server refuses message schedules on a stream with
``discard: new``, and the jobs stream must keep ``discard: new`` (``old``
would silently delete the oldest jobs when it is full). So a schedule
survives restarts (it is stored like any message) and fires once per period
for the whole fleet (the server fires it, not a bot). An ``@at`` schedule is
removed after it fires; a periodic one stays until `corral schedule rm`.

Every firing of a periodic schedule is its own job: the fired message carries
``Nats-Scheduler`` and a next-firing time, and bots then use
``<job id>-<stream sequence>`` as the id, so the result fence never swallows a
later firing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core.connect import publish_error
from corral.core.control import record
from corral.core.errors import InvalidJobError
from corral.core.history import subject_of, walk
from corral.core.messages import Job, decode_job, encode
from corral.core.names import SCHEDULES_STREAM, check_token, firing_subject, schedule_subject

_EVERY = re.compile(r"^@every \d+(ms|s|m|h)$")
_NAMED = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def spec_at(when: dt.datetime) -> str:
    return f"@at {when.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def check_spec(spec: str) -> str:
    """Return a schedule spec the server accepts, or raise.

    Raises:
        InvalidJobError: not ``@at <RFC3339>``, ``@every <n>(ms|s|m|h)``, ``@hourly``-style, or 6-field cron.
    """
    spec = spec.strip()
    if spec.startswith("@at "):
        try:
            dt.datetime.strptime(spec[4:], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise InvalidJobError(f"schedule {spec!r}: use @at YYYY-MM-DDTHH:MM:SSZ (UTC)") from None
        return spec
    if _EVERY.match(spec) or spec in _NAMED or len(spec.split()) == 6:
        return spec
    raise InvalidJobError(
        f"schedule {spec!r} is not understood: use '@at 2026-11-23T18:00:00Z', '@every 10m', '@hourly', "
        "or a 6-field cron 'sec min hour day month weekday' such as '0 */10 * * * *'"
    )


@dataclass(frozen=True)
class Schedule:
    name: str
    spec: str
    target: str
    job: Job | None


async def add(js: JetStreamContext, name: str, job: Job, spec: str) -> Schedule:
    """Create or replace the schedule ``name`` for ``job``."""
    check_token(name, "schedule name")
    job.validate()
    spec = check_spec(spec)
    subject = schedule_subject(name)
    await remove(js, name)
    headers = {"Nats-Schedule": spec, "Nats-Schedule-Target": firing_subject(job.queue, job.priority)}
    try:
        await js.publish(subject, encode(job), headers=headers, stream=SCHEDULES_STREAM)
    except Exception as e:  # translated once, here
        raise publish_error(e, subject) from e
    return Schedule(name, spec, headers["Nats-Schedule-Target"], job)


async def remove(js: JetStreamContext, name: str) -> None:
    """Delete a schedule (no-op if absent)."""
    try:
        await js.purge_stream(SCHEDULES_STREAM, subject=schedule_subject(check_token(name, "schedule name")))
    except nats.js.errors.NotFoundError:
        pass


async def list_schedules(js: JetStreamContext) -> list[Schedule]:
    out = []
    async for msg in walk(js, SCHEDULES_STREAM, schedule_subject("*")):
        h = msg.headers or {}
        try:
            job = decode_job(msg.data or b"")
        except InvalidJobError:
            job = None
        out.append(Schedule(subject_of(msg).rsplit(".", 1)[-1], h.get("Nats-Schedule", "?"), h.get("Nats-Schedule-Target", "?"), job))
    return out


def firing_id(job_id: str, headers: dict[str, str] | None, seq: int) -> str:
    """The job id a delivery runs under: periodic firings get their own, one-shot ones keep theirs."""
    h = headers or {}
    if h.get("Corral-Job-Id"):
        return h["Corral-Job-Id"]
    if "Nats-Scheduler" in h and h.get("Nats-Schedule-Next", "purge") != "purge":
        return f"{job_id}-{seq}"[:128]
    return job_id


async def add_schedule(nc: NATS, name: str, job: Job, spec: str, who: str) -> Schedule:
    """Create or replace a schedule and record who did it (``corral.events.ops.schedule``)."""
    s = await add(nc.jetstream(), name, job, spec)
    await record(nc, "schedule", who, f"add schedule {name}: {job.kind} {s.spec}")
    return s


async def remove_schedule(nc: NATS, name: str, who: str) -> None:
    """Remove a schedule (no-op if absent) and record who did it."""
    await remove(nc.jetstream(), name)
    await record(nc, "schedule", who, f"remove schedule {name}")


def schedule_spec(*, every: str | None = None, cron: str | None = None, at: str | None = None) -> str:
    """The ``Nats-Schedule`` spec for exactly one of ``--every 10m``, ``--cron '0 0 3 * * *'``, ``--at <RFC3339>``."""
    return f"@every {every}" if every else cron if cron else f"@at {at}"
