"""Removing consumed jobs from the limits-retention jobs stream, by the consumers' ack floors.

``CORRAL_JOBS`` keeps a message after its ack (limits retention: an ack only moves the
consumer's ack floor, which is far cheaper than the fsynced delete a work queue does).
Consumed jobs are removed in bulk instead: for each work consumer's subject, one
``STREAM.PURGE`` with ``{"filter": subject, "seq": keep}`` deletes every message on that
subject below ``keep``. ``keep`` is one past the lowest ack floor of every consumer whose
filter overlaps the subject, so no consumer ever loses a message it has not acked past.

A message the server gave up on (``max_deliver`` exhausted) lets the ack floor move past it
without being acked; the reaper must dead-letter it first, so callers pass the sequences
they know to be exhausted and unreaped as ``hold``: no purge reaches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from corral.core.jsapi import api
from corral.core.names import JOBS_STREAM, consumer_op, stream_op

#: Work consumers are named ``work-<queue>-<priority>`` (core/names.py consumer_name).
WORK_PREFIX = "work-"


@dataclass(frozen=True)
class ConsumerFloor:
    name: str
    filters: tuple[str, ...]  #: its filter subjects; empty means the whole stream
    ack_floor: int  #: the stream sequence every message at or below has been acked (or given up)


def overlaps(a: str, b: str) -> bool:
    """True if some subject matches both filters (``*`` one token, ``>`` the rest)."""
    ta, tb = a.split("."), b.split(".")
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
        if i == min(len(ta), len(tb)) - 1:
            return len(ta) == len(tb)
    return False


def floor_of(info: Mapping) -> ConsumerFloor:
    """A consumer's floor from its raw ``CONSUMER.INFO`` / ``LIST`` answer."""
    config = info.get("config", {})
    filters = tuple(config.get("filter_subjects") or ([config["filter_subject"]] if config.get("filter_subject") else []))
    return ConsumerFloor(info["name"], filters, int((info.get("ack_floor") or {}).get("stream_seq") or 0))


async def consumer_floors(nc: NATS, stream: str = JOBS_STREAM) -> list[ConsumerFloor]:
    """Every consumer of ``stream`` with its ack floor (one paged ``CONSUMER.LIST``)."""
    out, offset = [], 0
    while True:
        page = await api(nc, consumer_op("LIST", stream), {"offset": offset})
        out += [floor_of(c) for c in page.get("consumers") or []]
        offset += len(page.get("consumers") or [])
        if not page.get("consumers") or offset >= int(page.get("total") or 0):
            return out


def keep_points(floors: Iterable[ConsumerFloor]) -> dict[str, int]:
    """Per work consumer's subject, the lowest sequence to keep: 1 + the minimum overlapping floor."""
    floors = list(floors)
    points = {}
    for work in floors:
        if not work.name.startswith(WORK_PREFIX) or len(work.filters) != 1:
            continue
        subject = work.filters[0]
        overlapping = [f.ack_floor for f in floors if not f.filters or any(overlaps(subject, s) for s in f.filters)]
        points[subject] = min(overlapping) + 1
    return points


def held_back(points: Mapping[str, int], hold: Mapping[int, str]) -> dict[str, int]:
    """``points`` lowered so that no sequence in ``hold`` (seq -> subject) is purged.

    A held sequence whose subject is unknown ("") holds back every subject.
    """
    out = dict(points)
    for seq, subject in hold.items():
        for name in (out if not subject else [subject] if subject in out else []):
            out[name] = min(out[name], seq)
    return out


async def first_unconsumed(nc: NATS, stream: str = JOBS_STREAM) -> int:
    """The lowest keep point over every work subject: readers of waiting jobs start there, skipping
    acked jobs the purge has not reached yet (1 when there are no work consumers)."""
    return min(keep_points(await consumer_floors(nc, stream)).values(), default=1)


async def purge_below(nc: NATS, subject: str, keep: int, stream: str = JOBS_STREAM) -> int:
    """Delete every message on ``subject`` with a sequence below ``keep``; returns how many went."""
    if keep <= 1:
        return 0
    answer = await api(nc, stream_op("PURGE", stream), {"filter": subject, "seq": keep})
    return int(answer.get("purged") or 0)


async def purge_once(nc: NATS, hold: Mapping[int, str] | None = None, stream: str = JOBS_STREAM) -> int:
    """Purge every work subject below its current keep point now; returns the count removed."""
    points = held_back(keep_points(await consumer_floors(nc, stream)), hold or {})
    return sum([await purge_below(nc, subject, keep, stream) for subject, keep in points.items()])
