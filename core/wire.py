"""The wire messages corral writes as small hand-built JSON values or header maps, declared once.

The big messages (jobs, results, events, heartbeats) are Structs in
:mod:`corral.core.messages`; the ones here are written by the modules named in
each docstring with ``json.dumps`` or a header dict. Declaring them lets
``python -m corral.contract`` publish a JSON Schema for each (docs/schema/),
and the functional contract test checks that what those modules really write
matches. Header maps use the header names as field names; every header value
is a string on the wire, so numbers in headers are decimal text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from corral.core.messages import DeadLetterHeaders as H

_DIGITS = Meta(pattern=r"^[0-9]+$")
_DECIMAL = Meta(pattern=r"^[0-9]+(\.[0-9]+)?$")
_TOKEN = r"^[A-Za-z0-9_-]{1,128}$"


class JobHeaders(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Headers a submitter puts on a job (``core/submit.py``).

    Both are optional for the server, but ``Nats-Msg-Id`` is what makes a
    retried publish one job: set it to the job's ``idempotency_key`` or, without one, its ``id``.
    """

    #: Deduplication within the jobs stream's 10-minute window: same value, one stored job.
    msg_id: str = field(default="", name="Nats-Msg-Id")
    #: ``CORRAL_JOBS``: the server refuses the publish if the subject is not stored there.
    expected_stream: str = field(default="", name="Nats-Expected-Stream")


class DeadLetterHeaderMap(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The headers of a dead letter on ``corral.dlq.<queue>.<job_id>`` (``core/dlq.py`` ``move_to_dlq``).

    The body is the job's original bytes, untouched, even when they are not a valid job.
    """

    #: ``dlq-<jobs stream sequence>``: a second move of the same message is stored once.
    msg_id: str = field(name="Nats-Msg-Id")
    #: Why the job died, on one line (at most 2000 characters).
    reason: str = field(name=H.REASON)
    #: How many times the job was delivered, as decimal text.
    attempts: Annotated[str, _DIGITS] = field(name=H.ATTEMPTS)
    #: The job's id, or ``invalid-<seq>`` when the body could not be decoded.
    job_id: str = field(name=H.JOB_ID)
    queue: str = field(name=H.QUEUE)
    #: The subject the job was published on, ``corral.jobs.<queue>.<priority>``; a replay goes back there.
    source_subject: str = field(name=H.SOURCE_SUBJECT)
    #: The job's sequence in CORRAL_JOBS, as decimal text.
    source_seq: Annotated[str, _DIGITS] = field(name=H.SOURCE_SEQ)
    #: When it died: Unix seconds as decimal text with six decimals.
    dead_at: Annotated[str, _DECIMAL] = field(name=H.DEAD_AT)
    #: The bots that ran it, comma-separated (dead letters from older versions may lack it).
    bots: str = field(default="", name=H.BOTS)


class ScheduleHeaders(msgspec.Struct, kw_only=True):
    """Headers of a schedule on ``corral.schedules.defs.<name>`` (``core/schedules.py``); the body is a job."""

    #: ``@at 2026-11-23T18:00:00Z``, ``@every 10m``, ``@hourly``-style, or a 6-field cron.
    schedule: str = field(name="Nats-Schedule")
    #: ``corral.schedules.fire.<queue>.<priority>``: the server publishes the body there at each firing.
    target: Annotated[str, Meta(pattern=r"^corral\.schedules\.fire\.[A-Za-z0-9_-]+\.(high|normal|low)$")] = field(
        name="Nats-Schedule-Target")


class ControlRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A request on ``corral.control.bot.<bot>`` (core NATS request/reply, answered by the bot)."""

    #: ``drain``: finish running jobs, deregister and exit. ``ping``: report state and incarnation.
    action: Literal["drain", "ping"]
    #: Who asks, as ``user@host``; logged by the bot.
    actor: str | None = None


class ControlReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A bot's answer to a :class:`ControlRequest`."""

    ok: bool
    #: The bot's state (``ready``, ``processing``, ``shutting_down``, ...); set when ``ok``.
    state: str | None = None
    #: The bot process's incarnation id; set on ``ping``.
    incarnation: str | None = None
    #: Why the request was refused; set when not ``ok``.
    error: str | None = None


class LeaseHolder(msgspec.Struct, kw_only=True):
    """Who holds a leased key: a lock ``$KV.corral_locks.<name>`` (``core/locks.py``) or a
    concurrency slot ``$KV.corral_limits.slot.<kind>.<i>`` (``core/limits.py``). The key's TTL is the lease."""

    #: The holder: the bot name and job id for a slot, the caller's name for a lock.
    owner: str
    #: Unix seconds when it was taken.
    since: float


class UniqueHolder(msgspec.Struct, kw_only=True):
    """The value of ``$KV.corral_unique.<sha256(unique_key)>`` (``core/unique.py``), held while the job is pending or running."""

    job_id: Annotated[str, Meta(pattern=_TOKEN)]
    #: The job's ``unique_key`` in full (the key name is its SHA-256 in hex).
    key: str


class CancelRequest(msgspec.Struct, kw_only=True):
    """The value of ``$KV.corral_cancel.<job_id>`` (``core/cancel.py``); every bot watches the bucket."""

    #: Who asked, as ``user@host``.
    by: str
    #: Unix seconds when it was asked.
    ts: float


class GroupMember(msgspec.Struct, kw_only=True):
    """The value of ``$KV.corral_groups.<group>.<job_id>`` (``core/groups.py``): one finished member of a fan-in group."""

    outcome: Literal["succeeded", "dead"]
    #: The member's result ``value`` when it succeeded, the dead-letter reason when it died.
    detail: Any = None
    #: Unix seconds when the member finished.
    ts: float


#: The value of ``$KV.corral_limits.rate.<kind>.<window>``: jobs of the kind started in that window, as a JSON integer.
RateCount = Annotated[int, Meta(ge=1, title="RateCount", description="Jobs of the kind started in the window `floor(now / per)`.")]
