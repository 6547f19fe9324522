"""Batch handlers: jobs of a ``@batch`` kind share one handler call, each keeping its own outcome.

Every job still runs its own attempt (settle, admit, record, ack) in its own worker; only the
handler call is shared. A job that reaches the "run the handler" step joins the kind's open
batch. The batch fires when it holds ``size`` jobs, or ``wait`` seconds after its first job
joined: whichever of its waiting jobs wakes first makes the call, for all of them, and hands
each its own value or error. The call runs under the smallest deadline of its jobs, shielded
from the calling job's own cancellation (the call is not that job's alone).

A job cancelled (or timed out) while its batch has not fired leaves the batch; after the call
started its share is simply dropped. A suspect (a redelivery whose earlier delivery died) never
joins a batch: it runs alone, a batch of one (bots/attempt.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import anyio

from corral.core.errors import JobError
from corral.core.handlers import BatchItem, BatchSpec, JobContext


@dataclass(eq=False)
class _Slot:
    item: BatchItem
    deadline: float  #: anyio clock
    outcome: Any = None  #: the value, or the Exception that fails this job


@dataclass(eq=False)
class _Batch:
    fire_at: float  #: anyio clock
    slots: list[_Slot] = field(default_factory=list)
    full: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    started: bool = False


class Collector:
    """Gathers one batch kind's jobs into handler calls."""

    def __init__(self, kind: str, fn: Any, spec: BatchSpec) -> None:
        self.kind = kind
        self.fn = fn
        self.spec = spec
        self.open: _Batch | None = None
        #: Sizes of the calls made, newest last (a few, for logs and tests).
        self.sizes: list[int] = []

    async def call(self, item: BatchItem, timeout: float) -> Any:
        """This job's share of a batched call: its value, or raises its error."""
        now = anyio.current_time()
        batch = self.open
        if batch is None:
            batch = self.open = _Batch(fire_at=now + self.spec.wait)
        slot = _Slot(item, now + timeout)
        batch.slots.append(slot)
        if len(batch.slots) >= self.spec.size:
            self._close(batch)
        try:
            with anyio.move_on_after(max(0.0, batch.fire_at - now)):
                await batch.full.wait()
            if not batch.started:
                await self._fire(batch)
            await batch.done.wait()
        except BaseException:
            if not batch.started:  # cancelled before the call: leave the batch
                batch.slots.remove(slot)
                if not batch.slots:
                    self._close(batch)
            raise
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome

    def _close(self, batch: _Batch) -> None:
        """No job joins ``batch`` any more; its waiters wake."""
        if self.open is batch:
            self.open = None
        batch.full.set()

    async def _fire(self, batch: _Batch) -> None:
        self._close(batch)
        batch.started = True
        slots = list(batch.slots)
        self.sizes = [*self.sizes[-99:], len(slots)]
        with anyio.CancelScope(shield=True, deadline=min(s.deadline for s in slots)) as scope:
            try:
                outcomes = await self.outcomes([s.item for s in slots])
            except Exception as e:  # noqa: BLE001 - the handler's error fails every job of the call
                outcomes = [e] * len(slots)
        if scope.cancelled_caught:
            outcomes = [TimeoutError(f"batch of {len(slots)} timed out")] * len(slots)
        for slot, outcome in zip(slots, outcomes, strict=True):
            slot.outcome = outcome
        batch.done.set()

    async def outcomes(self, items: list[BatchItem]) -> list[Any]:
        results = await self.fn(items, items[0].ctx)
        if not isinstance(results, list | tuple) or len(results) != len(items):
            got = f"{len(results)} results" if isinstance(results, list | tuple) else type(results).__name__
            raise JobError(f"batch handler for {self.kind!r} must return a list of {len(items)} results, "
                           f"one per item in order; it returned {got}")
        return list(results)


class Batches:
    """The bot's collectors, one per batch kind of its registry."""

    def __init__(self, specs: dict[str, BatchSpec], handlers: dict[str, Any]) -> None:
        self.collectors = {kind: Collector(kind, handlers[kind], spec) for kind, spec in specs.items()}

    async def call(self, job_id: str, args: dict[str, Any], attempt: int, ctx: JobContext, timeout: float) -> Any:
        collector = self.collectors[ctx.job.kind]
        return await collector.call(BatchItem(id=job_id, args=args, attempt=attempt, ctx=ctx),
                                    timeout if timeout > 0 else math.inf)

    async def alone(self, job_id: str, args: dict[str, Any], attempt: int, ctx: JobContext) -> Any:
        """A batch of one, called at once (the caller's scope carries the job's deadline)."""
        collector = self.collectors[ctx.job.kind]
        collector.sizes = [*collector.sizes[-99:], 1]
        item = BatchItem(id=job_id, args=args, attempt=attempt, ctx=ctx)
        outcome = (await collector.outcomes([item]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
