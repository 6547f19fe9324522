"""A job's workflow as a tree: its chain, the saga compensations that ran, its fan-in group.

The workflow's state is only messages with deterministic ids (``bots/after.py``):
step ``i`` after job ``X`` is ``X-then<i>``, the first compensation of a dead
step ``X`` is ``X-comp0`` (the rest are its ``then`` steps), a group's callback
is ``<group>-done``. So from any member the root is found by stripping those
suffixes, and the tree is read back step by step with :mod:`corral.core.jobrecord`.
A step not submitted yet is drawn from its parent's template, as ``waiting``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec
from nats.js import JetStreamContext

from corral.core import groups, jobrecord
from corral.core.jobrecord import JobRecord
from corral.core.messages import EventType, Job

MAX_NODES = 60  #: steps read per tree, so a long chain cannot stall the dashboard
PENDING_SCAN = 2000  #: pending jobs scanned per step to find one that waits
_STEP = re.compile(r"-(?:then|comp)\d+$")
STATE_STYLE = {"succeeded": "green", "dead": "bold red", "failed": "yellow", "waiting": "dim", "cancelled": "magenta"}


@dataclass
class Node:
    """One step: its job id, what it is to the workflow, its state, and what followed it."""

    job_id: str
    role: str  #: "job", "then 0", "compensation", "member", "callback", "group"
    state: str
    kind: str = ""
    children: list[Node] = field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


def root_of(job_id: str) -> str:
    """The job that started the chain or saga ``job_id`` belongs to."""
    while (m := _STEP.search(job_id)) is not None:
        job_id = job_id[: m.start()]
    return job_id


def status_of(rec: JobRecord) -> str:
    """The step's :attr:`JobRecord.status`, as `corral job` and the inspector show it, except that a step
    with no record of its own is ``waiting`` (not submitted yet)."""
    status = rec.status
    return "waiting" if status == jobrecord.UNSEEN else status


class Reader:
    """Reads a workflow's records, at most :data:`MAX_NODES` of them."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.read = 0

    async def record(self, job_id: str) -> JobRecord | None:
        if self.read >= MAX_NODES:
            return None
        self.read += 1
        return await jobrecord.read_record(self.js, job_id, PENDING_SCAN)

    async def step(self, job_id: str, role: str, template: Job | None) -> Node:
        """``job_id`` and everything that followed it: its ``then`` steps and, if it died, its compensations."""
        rec = await self.record(job_id)
        job = (rec.job if rec else None) or template
        node = Node(job_id, role, status_of(rec) if rec else "not read (tree too large)", job.kind if job else "")
        if job is None or rec is None:
            return node
        base = job_id[:100]  # as bots/after.py cuts it
        for i, nxt in enumerate(job.then):
            node.children.append(await self.step(f"{base}-then{i}", f"then {i}", nxt))
        if any(e.type == EventType.COMPENSATING for e in rec.events) or (rec.dead and job.compensations):
            first = job.compensations[0] if job.compensations else None
            if first is not None:  # the rest of the undo chain follows the first, as bots/after.py submits it
                first = msgspec.structs.replace(first, then=list(job.compensations[1:]))
            node.children.append(await self.step(f"{base}-comp0", "compensation", first))
        return node

    async def group(self, job: Job) -> Node:
        """A fan-in group: its finished members and its callback."""
        assert job.group is not None
        finished = await groups.finished_members(self.js, job.group)
        size = job.group_size or len(finished)
        node = Node(job.group, "group", f"{len(finished)}/{size} finished", "")
        for m in finished:
            node.children.append(Node(m.job_id, "member", m.outcome))
        callback = await self.record(groups.callback_id(job.group))
        node.children.append(Node(groups.callback_id(job.group), "callback", status_of(callback) if callback else "?",
                                  job.on_complete.kind if job.on_complete else ""))
        return node


async def read_workflow(js: JetStreamContext, job_id: str) -> Node:
    """The tree ``job_id`` belongs to: its group when it is a member, else its chain from the root.

    Raises:
        InvalidJobError: not a valid job id.
        TransportError: the server did not answer.
    """
    reader = Reader(js)
    rec = await reader.record(job_id)
    if rec is not None and rec.job is not None and rec.job.group:
        return await reader.group(rec.job)
    return await reader.step(root_of(job_id), "job", None)
