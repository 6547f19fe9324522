"""A job's audit trail as readers show it: its events plus what its result implies.

A first delivery that succeeds writes no ``started`` and no ``succeeded`` event
(bots/attempt.py, bots/execute.py): its result already records the bot, the
incarnation, the attempt and the handler's start and finish times, so the two
events would only repeat it at the cost of two writes per job. Every reader
(``corral job``, the dashboard, the chaos judges, the poison evidence) puts them
back with :func:`implied_by` and :func:`with_result`, so a lean success reads
exactly like a fully recorded one. The ledger does the same in SQL (its
``timeline`` view, ledger/schema.py) from the same rule.

A bot started with ``--full-events`` still writes both events; the derived
entries then duplicate recorded ones and are left out.
"""

from __future__ import annotations

import msgspec

from corral.core.messages import Event, EventType, JobResult

#: The event types a result implies, in the order they happened.
IMPLIED = (EventType.STARTED, EventType.SUCCEEDED)


def implied_by(result: JobResult) -> list[Event]:
    """The ``started`` and ``succeeded`` entries a recorded result stands for (times are the handler's own)."""
    started = Event(type=EventType.STARTED, ts=result.started_at, job_id=result.job_id, bot=result.bot,
                    incarnation=result.incarnation, attempt=result.attempt, kind=result.kind, queue=result.queue,
                    correlation_id=result.job.correlation_id if result.job is not None else None)
    succeeded = msgspec.structs.replace(started, type=EventType.SUCCEEDED, ts=result.finished_at,
                                        duration=result.finished_at - result.started_at)
    return [started, succeeded]


def _recorded(events: list[Event], derived: Event) -> bool:
    """Whether the trail already holds ``derived`` (a bot with ``--full-events`` wrote it)."""
    return any(e.type == derived.type and e.attempt == derived.attempt and e.incarnation == derived.incarnation
               for e in events)


def with_result(events: list[Event], result: JobResult | None) -> list[Event]:
    """The trail with the entries ``result`` implies merged in by time; ``events`` is not changed.

    A derived entry goes after the last event no later than it, so the stored order of the
    recorded events (which is not always their clock order across bots) is kept.
    """
    if result is None:
        return list(events)
    merged = list(events)
    for derived in implied_by(result):
        if _recorded(events, derived):
            continue
        at = len(merged)
        while at > 0 and merged[at - 1].ts > derived.ts:
            at -= 1
        merged.insert(at, derived)
    return merged
