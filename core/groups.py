"""Fan-out / fan-in: a group of jobs and a callback that runs once every member has finished.

``make_group(members, callback)`` gives each member the group's id, its size and
the callback. When a member ends (succeeded or dead), its bot writes
``$KV.corral_groups.<group>.<member id>`` with the outcome, then counts the
group's *distinct* member keys (one stream-info request with a subjects
filter). A redelivered member rewrites its own key, so it is never counted
twice. When the count reaches the size, the bot submits the callback as
``<group>-done`` with every member's outcome in ``args["members"]``. Two members
finishing at once may both submit it: the deterministic id makes that one job
(Nats-Msg-Id, then the result fence). A bot dying between writing its key and
submitting the callback repeats both on the redelivery (the handler is not
re-run). Keys are kept 7 days.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from corral.core import lookup
from corral.core.jsapi import api
from corral.core.dlq import list_dead
from corral.core.history import job_events, job_result, subject_of, walk
from corral.core.messages import EventType, Job, job_decoder, new_id
from corral.core.purge import first_unconsumed
from corral.core.names import GROUPS_BUCKET, JOBS_STREAM, JOBS_SUBJECT, check_token, kv_stream, kv_subject, stream_op

BUCKET = GROUPS_BUCKET
STREAM = kv_stream(BUCKET)


def make_group(members: list[Job], callback: Job, group: str | None = None) -> list[Job]:
    """Members ready to submit: each knows the group, its size and the callback."""
    group = check_token(group or f"group-{new_id()[:20]}", "group id")
    return [msgspec.structs.replace(m, group=group, group_size=len(members), on_complete=callback) for m in members]


async def member_done(js: JetStreamContext, job: Job, outcome: str, detail: Any) -> dict[str, Any] | None:
    """Record a member's outcome; returns every member's outcome once all have finished, else None."""
    assert job.group is not None, "only a group member has an outcome to record"  # the caller checks job.group
    subject = kv_subject(BUCKET, f"{job.group}.{job.id}")
    await js.publish(subject, json.dumps({"outcome": outcome, "detail": detail, "ts": time.time()}, default=str).encode())
    if await finished_count(js, job.group) < job.group_size:  # distinct members, not increments
        return None
    members: dict[str, Any] = {}
    async for msg in walk(js, STREAM, kv_subject(BUCKET, f"{job.group}.*")):
        members[subject_of(msg).rsplit(".", 1)[-1]] = json.loads(msg.data or b"{}")
    return members


# -- reading a group back (`corral group show`, the dashboard's Features screen) -------------------

#: Pending jobs peeked at (direct gets, never the bots' consumer) to size an unfinished group or find its callback.
PENDING_SCAN = 5000


def callback_id(group: str) -> str:
    """The id the group's callback runs under (the member that completes the group submits it)."""
    return f"{group}-done"


@dataclass(frozen=True)
class MemberOutcome:
    """One finished member, as its bot recorded it in the groups bucket (``ts`` in Unix seconds)."""

    job_id: str
    outcome: str  #: "succeeded" or "dead"
    ts: float
    detail: Any = None


@dataclass(frozen=True)
class GroupShape:
    """What every member carries and never changes: the group's size and its callback."""

    size: int
    callback: Job


@dataclass(frozen=True)
class GroupStatus:
    """What `corral group show` prints: the finished members, the group's shape, the callback's state."""

    group: str
    finished: list[MemberOutcome]
    shape: GroupShape | None  #: None when no member's job could be read back
    callback_state: str  #: see :func:`callback_state`

    @property
    def done(self) -> int:
        return len(self.finished)


def _outcome(msg: RawStreamMsg) -> MemberOutcome:
    try:
        value = json.loads(msg.data or b"{}")
    except ValueError:
        value = {}
    return MemberOutcome(subject_of(msg).rsplit(".", 1)[-1], str(value.get("outcome", "?")), float(value.get("ts", 0.0)),
                         value.get("detail"))


async def finished_members(js: JetStreamContext, group: str) -> list[MemberOutcome]:
    """Every finished member of ``group``, in the order they finished.

    Raises:
        TransportError: the server did not answer.
    """
    check_token(group, "group id")
    return [_outcome(msg) async for msg in walk(js, STREAM, kv_subject(BUCKET, f"{group}.*"))]


async def finished_count(js: JetStreamContext, group: str) -> int:
    """How many distinct members of ``group`` have finished (one request, as the bots count)."""
    # Raw API, for the filtered subjects map. Its ``num_subjects`` counts the whole stream whatever
    # the filter (docs/nats-notes.md#counting-the-subjects-under-a-prefix), so a second group would look finished early: count the map.
    info = await api(js._nc, stream_op("INFO", STREAM), {"subjects_filter": kv_subject(BUCKET, f"{check_token(group, 'group id')}.*")})
    return len(info["state"].get("subjects") or {})


async def recent_groups(js: JetStreamContext, *, window: int = 300, limit: int = 20) -> dict[str, list[MemberOutcome]]:
    """Groups with a member among the bucket's last ``window`` writes, newest first (at most ``limit``),
    each with the members finished within that window.

    Raises:
        TransportError: the server did not answer.
    """
    info = await js.stream_info(STREAM)
    start = max(info.state.last_seq - window + 1, 1)
    seen: dict[str, list[MemberOutcome]] = {}
    async for msg in walk(js, STREAM, kv_subject(BUCKET, ">"), start_seq=start, limit=window):
        group = subject_of(msg).split(".")[-2]
        seen.setdefault(group, []).append(_outcome(msg))
        seen[group] = seen.pop(group)  # most recent write last
    return dict(list(reversed(seen.items()))[:limit])


def _shape(job: Job | None, group: str) -> GroupShape | None:
    if job is None or job.group != group or job.on_complete is None:
        return None
    return GroupShape(job.group_size, job.on_complete)


async def read_shape(js: JetStreamContext, group: str, finished: list[MemberOutcome], *, scan_pending: bool = True) -> GroupShape | None:
    """The group's size and callback, read from a member's job: the job stored with a succeeded
    member's result, else a dead member's letter, else (``scan_pending``) a member still waiting.

    Raises:
        TransportError: the server did not answer.
    """
    for m in [m for m in finished if m.outcome == "succeeded"][:3]:
        result = await job_result(js, m.job_id)
        if shape := _shape(result.job if result else None, group):
            return shape
    dead_ids = {m.job_id for m in finished if m.outcome != "succeeded"}
    if dead_ids:
        for letter in await list_dead(js, match=lambda d: d.job_id in dead_ids, limit=1):
            if shape := _decoded_shape(letter.data, group):
                return shape
    return await _pending_shape(js, group) if scan_pending else None


def _decoded_shape(data: bytes | None, group: str) -> GroupShape | None:
    try:
        return _shape(job_decoder.decode(data or b""), group)
    except msgspec.DecodeError:
        return None


async def _pending_shape(js: JetStreamContext, group: str) -> GroupShape | None:
    """Peek at the first :data:`PENDING_SCAN` pending jobs for a member of ``group``.

    The byte search is a cheap pre-filter; the callback, which names the group in its args, decodes
    to a job outside the group and is skipped.
    """
    needle = f'"group":"{group}"'.encode()
    start = await first_unconsumed(js._nc)  # below it: acked jobs awaiting the purge
    async for msg in walk(js, JOBS_STREAM, JOBS_SUBJECT, start_seq=start, limit=PENDING_SCAN):
        if needle in (msg.data or b"") and (shape := _decoded_shape(msg.data, group)):
            return shape
    return None


async def callback_state(js: JetStreamContext, group: str, done: int, size: int | None, *, scan_pending: bool = True) -> str:
    """Where the callback is: ``waiting`` (members still running), ``pending`` (every member finished,
    so the last one submitted it; not started yet), or the callback job's latest event
    (``started``, ``failed``, ``succeeded``, ``dead``…).

    A first delivery records no event until it ends (core/timeline.py), so a callback a bot is
    running looks pending by its events: the jobs stream's consumer tells (:func:`corral.core.lookup.locate`),
    and it is ``started`` as `corral job` says. ``scan_pending=False`` (the dashboard, every two seconds)
    skips that search of the waiting jobs and says ``pending``.
    """
    if await job_result(js, callback_id(group)) is not None:
        return "succeeded"
    events = [e for e in await job_events(js, callback_id(group)) if e.type != EventType.PROGRESS]
    if events:
        return str(events[-1].type)
    if size is None or done < size:
        return "waiting"
    if scan_pending and (await lookup.locate(js, callback_id(group), PENDING_SCAN)).state == lookup.ACTIVE:
        return lookup.TAKEN
    return "pending"


async def group_status(js: JetStreamContext, group: str) -> GroupStatus:
    """Everything recorded about ``group``: finished members, size and callback, the callback's state.

    Raises:
        TransportError: the server did not answer.
    """
    finished = await finished_members(js, group)
    shape = await read_shape(js, group, finished)
    state = await callback_state(js, group, len(finished), shape.size if shape else None)
    return GroupStatus(group, finished, shape, state)
