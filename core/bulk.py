"""Bulk operator actions on everything a filter matched, frozen at preview time.

An action over "everything matching" is resolved to an exact set first: the
dead-letter sequences or job ids the filter matched when the operator was
shown the preview. Only that set is acted on, so a filter edited afterwards, or
a new dead letter that would match it, cannot widen the action. Each run is
audited as one ``operator`` event on ``corral.events.ops.bulk`` naming the
operator, the action, the filter and the count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core.cancel import request_cancel
from corral.core.dlq import DeadLetter, get_dead, purge, replay
from corral.core.messages import Event, EventType, encode
from corral.core.names import ops_events_subject

BULK_ACTION = "bulk"  #: the ops subject token of the audit events: ``corral.events.ops.bulk``
SAMPLE = 5  #: items a preview lists by name
DLQ_ACTIONS = ("replay", "purge")


@dataclass(frozen=True)
class Frozen:
    """One bulk action with its target set fixed: ``ids`` are dead-letter sequences or job ids."""

    action: str  #: replay, purge (dead letters) or cancel (jobs)
    filter: str  #: the filter as the operator typed or gave it, for the confirmation and the audit
    ids: tuple[str, ...]
    sample: tuple[str, ...]  #: one line per item, the first :data:`SAMPLE`

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def done_verb(self) -> str:
        return {"replay": "replayed", "purge": "purged", "cancel": "cancelled"}[self.action]

    def preview(self) -> str:
        """What will happen, to whom, and that the set is fixed (the confirmation's text)."""
        what = {"replay": "Replay {n} dead letter(s) back onto the jobs stream",
                "purge": "Purge {n} dead letter(s) for good",
                "cancel": "Cancel {n} job(s)"}[self.action].format(n=self.count)
        lines = [f"{what}, matching {self.filter or 'everything'}:"]
        lines += [f"  {line}" for line in self.sample]
        if self.count > len(self.sample):
            lines.append(f"  … and {self.count - len(self.sample)} more")
        lines.append("Exactly these: a later filter change or a new match is not included.")
        return "\n".join(lines)


def freeze_dead(action: str, letters: Sequence[DeadLetter], filter_text: str) -> Frozen:
    """Fix the dead letters a filter matched now as the target of ``action`` (replay or purge)."""
    if action not in DLQ_ACTIONS:
        raise ValueError(f"dead-letter action {action!r} must be one of {', '.join(DLQ_ACTIONS)}")
    sample = tuple(f"#{d.seq} {d.kind} {d.job_id}: {d.reason[:80]}" for d in letters[:SAMPLE])
    return Frozen(action, filter_text, tuple(str(d.seq) for d in letters), sample)


def freeze_jobs(jobs: Sequence[tuple[str, str]], filter_text: str) -> Frozen:
    """Fix the jobs a filter matched now as the target of a cancel; ``jobs`` is (job id, one-line description)."""
    ids = tuple(dict.fromkeys(job_id for job_id, _ in jobs))  # a job listed twice is cancelled once
    sample = tuple(f"{job_id} {what}" for job_id, what in jobs[:SAMPLE])
    return Frozen("cancel", filter_text, ids, sample)


async def run_dead(js: JetStreamContext, frozen: Frozen, *, actor: str,
                   progress: Callable[[int], None] = lambda n: None) -> int:
    """Replay or purge exactly the frozen dead letters still there (one gone since is skipped); audited."""
    letters = [d for seq in frozen.ids if (d := await get_dead(js, int(seq))) is not None]
    op = replay if frozen.action == "replay" else purge
    done = await op(js, letters, actor=actor, progress=progress)
    await audit(js, frozen, actor, done)
    return done


async def run_cancel(nc: NATS, frozen: Frozen, *, actor: str, progress: Callable[[int], None] = lambda n: None) -> int:
    """Ask every bot to cancel exactly the frozen jobs; audited."""
    for n, job_id in enumerate(frozen.ids, 1):
        await request_cancel(nc, job_id, actor)
        progress(n)
    await audit(nc.jetstream(), frozen, actor, frozen.count)
    return frozen.count


async def audit(js: JetStreamContext, frozen: Frozen, actor: str, done: int) -> None:
    """One operator event for the whole action: who, what, the filter, how many were previewed and done."""
    detail = f"{frozen.action} {done} of {frozen.count} previewed, filter {frozen.filter or '(none)'}"
    event = Event(type=EventType.OPERATOR, ts=time.time(), actor=actor, state=frozen.action, detail=detail)
    await js.publish(ops_events_subject(BULK_ACTION), encode(event))
