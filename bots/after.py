"""What follows a job's outcome: chains, sagas, fan-in groups, unique-key release.

The executor calls each :class:`AfterOutcome` hook in turn with the
:class:`Outcome`, *before* it acks or terminates the delivery. So a bot that
dies between a hook and the ack has the delivery redelivered, and the
redelivery runs the hooks again: every hook must be harmless to repeat. The
built-in ones are, because what they submit has a deterministic id (the job
stream's Nats-Msg-Id dedupe, then the result fence, drop a second copy) and a
unique key's release is a delete of a key that may already be gone.

A new feature that reacts to outcomes is one more hook in the list
:func:`default_hooks` builds, with no change to the executor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import msgspec
from nats.js import JetStreamContext

from corral.bots.trail import Trail
from corral.core import groups, unique
from corral.core.log import Logger
from corral.core.messages import EventType, Job
from corral.core.submit import submit


class Ended(StrEnum):
    """How a delivery ended, as far as what follows it is concerned."""

    SUCCEEDED = "succeeded"  #: the handler's result was recorded by this delivery
    DUPLICATE = "duplicate"  #: a result was already recorded (``value`` is it): what follows success runs again
    FENCED = "fenced"  #: another delivery's result was recorded, not ours: its bot continued the chain
    DEAD = "dead"  #: moved to the dead-letter stream (``reason`` says why)
    CANCELLED = "cancelled"  #: cancelled before or while it ran
    EXPIRED = "expired"  #: its ``expires_at`` passed before it ran
    DROPPED = "dropped"  #: a ``drop`` singleton whose key another job held: not run


@dataclass(frozen=True)
class Outcome:
    """One delivery's end, as the hooks see it."""

    ended: Ended
    job: Job
    attempt: int  #: the delivery's attempt number, as its events carry it
    value: Any = None  #: the result, for SUCCEEDED and DUPLICATE
    reason: str = ""  #: why, for DEAD


class AfterOutcome(Protocol):
    """Reacts to an outcome; raising leaves the delivery unsettled, so it is redelivered and repeated."""

    async def __call__(self, outcome: Outcome) -> None: ...


_SUCCESS = (Ended.SUCCEEDED, Ended.DUPLICATE)


class Saga:
    """A dead job's compensations: undo the completed steps in reverse order, as a chain.

    The first compensation gets a deterministic id (``<job id>-comp0``) and the rest follow as its
    ``then`` steps, so a bot that dies here and a redelivery that repeats it submit the same jobs once.
    """

    def __init__(self, js: JetStreamContext, trail: Trail) -> None:
        self.js, self.trail = js, trail

    async def __call__(self, outcome: Outcome) -> None:
        job = outcome.job
        if outcome.ended != Ended.DEAD or not job.compensations:
            return
        first, *rest = job.compensations
        comp = msgspec.structs.replace(
            first, id=f"{job.id[:100]}-comp0", then=rest, compensations=[], created_at=time.time(),
            args={**first.args, "failed_job": job.id, "failure": outcome.reason[:500]},
            correlation_id=first.correlation_id or job.correlation_id or job.id,
        )
        await submit(self.js, comp)
        await self.trail.emit(job, EventType.COMPENSATING, outcome.attempt, detail=comp.id)


class FanIn:
    """Record a group member's end; the member that completes the group submits the callback."""

    def __init__(self, js: JetStreamContext, trail: Trail) -> None:
        self.js, self.trail = js, trail

    async def __call__(self, outcome: Outcome) -> None:
        job = outcome.job
        if not job.group or job.on_complete is None:
            return
        if outcome.ended in _SUCCESS:
            members = await groups.member_done(self.js, job, "succeeded", outcome.value)
        elif outcome.ended == Ended.DEAD:
            members = await groups.member_done(self.js, job, "dead", outcome.reason)
        else:
            return
        if members is None:
            return
        done = msgspec.structs.replace(
            job.on_complete, id=f"{job.group}-done", args={**job.on_complete.args, "group": job.group, "members": members},
            created_at=time.time(), correlation_id=job.on_complete.correlation_id or job.correlation_id or job.group,
        )
        await submit(self.js, done)
        await self.trail.emit(job, EventType.FAN_IN, outcome.attempt, detail=done.id)


class Chain:
    """Submit a succeeded job's ``then`` steps with its result; deterministic ids make a re-run harmless."""

    def __init__(self, js: JetStreamContext, trail: Trail) -> None:
        self.js, self.trail = js, trail

    async def __call__(self, outcome: Outcome) -> None:
        job = outcome.job
        if outcome.ended not in _SUCCESS or not job.then:
            return
        ids = []
        # Saga: what undoes the steps done so far travels with the chain, most recent first.
        undo = ([job.compensate] if job.compensate else []) + list(job.compensations)
        for i, step in enumerate(job.then):
            step_id = f"{job.id[:100]}-then{i}"
            nxt = msgspec.structs.replace(
                step, id=step_id, args={**step.args, "previous": outcome.value}, compensations=undo,
                created_at=time.time(), correlation_id=step.correlation_id or job.correlation_id or job.id,
            )
            await submit(self.js, nxt)
            ids.append(step_id)
        await self.trail.emit(job, EventType.CHAINED, outcome.attempt, detail=",".join(ids))


class UniqueRelease:
    """Whatever the end, free the job's unique key so the next job with that key can be submitted."""

    def __init__(self, js: JetStreamContext, log: Logger) -> None:
        self.js, self.log = js, log

    async def __call__(self, outcome: Outcome) -> None:
        if not outcome.job.unique_key:
            return
        try:
            await unique.release(self.js, outcome.job)
        except Exception as e:  # noqa: BLE001 - the key's TTL releases it anyway
            self.log.warning("unique.release_failed", job=outcome.job.id, error=str(e) or type(e).__name__)


def default_hooks(js: JetStreamContext, trail: Trail, log: Logger) -> list[AfterOutcome]:
    """The built-in hooks, in the order they run: compensations, fan-in, chain, unique key."""
    return [Saga(js, trail), FanIn(js, trail), Chain(js, trail), UniqueRelease(js, log)]


async def follow(hooks: Sequence[AfterOutcome], outcome: Outcome) -> None:
    """Run every hook on ``outcome``, in order."""
    for hook in hooks:
        await hook(outcome)
