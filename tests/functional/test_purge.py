"""Consumed jobs leave the limits-retention jobs stream by ack floor, and nothing unconsumed does."""

from __future__ import annotations

import json

import anyio
import pytest

from corral.bots.purger import PURGE_KEY, Purger
from corral.core import leases
from corral.core.backlog import unfinished
from corral.core.history import job_result
from corral.core.log import get_logger
from corral.core.messages import make_job
from corral.core.names import JOBS_STREAM, LOCKS_BUCKET, job_subject
from corral.core.purge import purge_once
from corral.core.submit import submit, submit_many
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


async def _stored(js) -> int:
    return (await js.stream_info(JOBS_STREAM)).state.messages


async def test_jobs_a_bot_finished_are_purged_from_the_stream_by_the_lease_holder(js, provisioned, bots):
    """Given a bot, when it finishes 20 jobs, the jobs stream empties and the purge lease names that bot."""
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(20)]
    await submit_many(js, jobs)
    bots(provisioned.url, "b1")
    for job in jobs:
        await eventually(lambda job=job: job_result(js, job.id), what=f"the result of {job.id}")
    await eventually(lambda: _empty(js), timeout=30, what="the purge to empty the stream")
    lease = await leases.read(js, LOCKS_BUCKET, PURGE_KEY)
    assert lease is not None and json.loads(lease.data or b"{}")["owner"] == "b1"
    assert await unfinished(js) == 0


async def _empty(js) -> bool:
    return await _stored(js) == 0


async def test_a_message_an_overlapping_consumer_has_not_acked_is_never_purged(js, provisioned):
    """Given an audit consumer on corral.jobs.> that acked nothing, a work consumer's acks purge nothing; the audit's acks do."""
    await js.add_consumer(JOBS_STREAM, durable_name="audit", filter_subject="corral.jobs.>", ack_policy="explicit")
    await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(5)])
    work = await js.pull_subscribe_bind("work-default-normal", JOBS_STREAM)
    for msg in await work.fetch(5, timeout=5):
        await msg.ack_sync()
    assert await purge_once(js._nc) == 0 and await _stored(js) == 5
    audit = await js.pull_subscribe_bind("audit", JOBS_STREAM)
    for msg in await audit.fetch(5, timeout=5):
        await msg.ack_sync()
    assert await purge_once(js._nc) == 5 and await _stored(js) == 0


async def test_an_unacked_job_stays_while_acked_ones_below_it_go(js, provisioned):
    """Given three jobs of which the middle one is still held, a purge removes only the first."""
    await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(3)])
    work = await js.pull_subscribe_bind("work-default-normal", JOBS_STREAM)
    first, _held, last = await work.fetch(3, timeout=5)
    await first.ack_sync()
    await last.ack_sync()
    assert await purge_once(js._nc) == 1
    assert await unfinished(js) == 1 and await _stored(js) == 2


async def test_an_exhausted_job_the_purger_heard_of_is_held_back_until_it_is_reaped(js, provisioned):
    """Given a sequence announced as exhausted, the purger keeps it (and what follows) though the ack floor passed it."""
    purger = Purger(js._nc, js, get_logger("test"), owner="t", interval=0.1)
    await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(3)])
    work = await js.pull_subscribe_bind("work-default-normal", JOBS_STREAM)
    msgs = await work.fetch(3, timeout=5)
    for msg in msgs:
        await msg.ack_sync()
    purger.exhausted[msgs[1].metadata.sequence.stream] = job_subject("default")
    await purger.tick()  # reads the floors; purges on the next tick
    assert await purger.tick() == 1 and await _stored(js) == 2
    await js.delete_msg(JOBS_STREAM, msgs[1].metadata.sequence.stream)  # what the reaper does after the dead letter
    assert await purger.tick() == 1 and await _stored(js) == 0 and not purger.exhausted


async def test_a_second_purger_takes_over_when_the_lease_holder_stops(js, provisioned):
    """Given two purgers, only one holds the lease; when it stops, the other takes it within the TTL."""
    first = Purger(js._nc, js, get_logger("test"), owner="first", interval=0.1)
    second = Purger(js._nc, js, get_logger("test"), owner="second", interval=0.1)
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def run_first() -> None:
            with scope:
                await first.run()

        tg.start_soon(run_first)
        await eventually(lambda: _owner(js, "first"), what="the first purger to take the lease")
        tg.start_soon(second.run)
        await submit(js, make_job("sum", {"a": 1, "b": 1}))
        scope.cancel()  # releases the key on the way out
        await eventually(lambda: _owner(js, "second"), timeout=30, what="the second purger to take over")
        tg.cancel_scope.cancel()


async def _owner(js, name: str) -> bool:
    lease = await leases.read(js, LOCKS_BUCKET, PURGE_KEY)
    return lease is not None and not leases.is_gone(lease) and json.loads(lease.data or b"{}")["owner"] == name
