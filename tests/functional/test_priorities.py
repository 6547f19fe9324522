"""Priorities on a real server with real bots: strict order, the fairness rule, idle wake-ups."""

from __future__ import annotations

import msgspec
import pytest

from corral.core.history import job_events, job_result, walk
from corral.core.messages import EventType, JobResult, encode, make_job
from corral.core.timeline import with_result
from corral.core.names import RESULTS_STREAM, job_subject
from corral.core.submit import raise_for, submit, submit_many
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


async def _results(js, at_least: int) -> list[JobResult] | None:
    found = [msgspec.json.decode(m.data or b"", type=JobResult) async for m in walk(js, RESULTS_STREAM, "corral.results.>")]
    return sorted(found, key=lambda r: r.started_at) if len(found) >= at_least else None


async def _submit(js, priority: str, n: int) -> None:
    raise_for(await submit_many(js, [make_job("sum", {"a": i, "b": 1}, priority=priority) for i in range(n)]))


async def test_a_bot_takes_higher_priority_work_first(js, provisioned, bots):
    """Given low, then normal, then high jobs waiting, a one-slot bot runs every high before any normal, then low."""
    for priority in ("low", "normal", "high"):  # stored oldest-first in the opposite order
        await _submit(js, priority, 8)
    bots(provisioned.url, "b1", "--concurrency", "1", "--fair-every", "0")
    results = await eventually(lambda: _results(js, 24), what="24 results")
    assert [r.job.priority for r in results] == ["high"] * 8 + ["normal"] * 8 + ["low"] * 8


async def test_lower_priorities_get_every_nth_start_under_a_flood_of_high_work(js, provisioned, bots):
    """With --fair-every 4, every 4th start goes to a lower priority, taking turns: low, then normal."""
    await _submit(js, "high", 16)
    await _submit(js, "normal", 2)
    await _submit(js, "low", 2)
    bots(provisioned.url, "b1", "--concurrency", "1", "--fair-every", "4")
    results = await eventually(lambda: _results(js, 20), what="20 results")
    order = [r.job.priority for r in results]
    assert [(i, p) for i, p in enumerate(order) if p != "high"] == [(3, "low"), (7, "normal"), (11, "low"), (15, "normal")]


async def test_an_idle_bot_starts_work_of_any_priority_at_once(js, provisioned, bots):
    """An idle bot long-polls every consumer, so a job on any priority wakes it, without waiting on the others."""
    bot = bots(provisioned.url, "b1")
    await eventually(lambda: _ready(bot), what="bot ready")
    for i, priority in enumerate(("low", "high", "normal")):
        await submit(js, make_job("sum", {"a": i, "b": 0}, priority=priority))
        results = await eventually(lambda i=i: _results(js, i + 1), timeout=10, what=f"the {priority} job's result")
        assert results[-1].job.priority == priority


async def _ready(bot) -> bool:
    return bot.ready()


async def test_jobs_a_bot_held_when_it_died_are_run_by_another_bot_once(js, provisioned, bots):
    """Given a bot SIGKILLed while running high jobs with more of every priority waiting, another bot
    finishes every job, each with exactly one result, the dead bot's after their ack deadline."""
    from corral.core.history import job_events
    from corral.core.messages import EventType

    jobs = {p: [make_job("sleep", {"seconds": 0.3}, priority=p) for _ in range(3)] for p in ("low", "normal", "high")}
    raise_for(await submit_many(js, [j for p in ("low", "normal", "high") for j in jobs[p]]))
    # --full-events: the test watches the first deliveries start, which the lean default does not record.
    doomed = bots(provisioned.url, "doomed", "--concurrency", "2", "--full-events")

    async def two_running():
        started = [j.id for j in jobs["high"] if any(e.type == EventType.STARTED for e in await job_events(js, j.id))]
        return started if len(started) == 2 else None

    held = await eventually(two_running, what="the doomed bot running two high jobs")
    doomed.kill()
    bots(provisioned.url, "heir", "--concurrency", "2")
    results = await eventually(lambda: _results(js, 9), timeout=30, what="all 9 results")
    assert sorted(r.job_id for r in results) == sorted(j.id for p in jobs.values() for j in p)
    assert {r.bot for r in results if r.job_id in held} == {"heir"}


async def test_the_delivery_subject_decides_the_queue_and_priority_a_job_is_recorded_with(js, provisioned, bots):
    """Given a job whose payload says low but published on the high subject, then it runs and is recorded as high."""
    bots(provisioned.url, "b1")
    job = make_job("sum", {"a": 1, "b": 1}, priority="low")
    await js.publish(job_subject("default", "high"), encode(job), headers={"Nats-Msg-Id": job.id})
    result = await eventually(lambda: job_result(js, job.id), what="the result")
    assert result.job.priority == "high" and result.queue == "default"
    events = with_result(await job_events(js, job.id), result)  # a lean success: its events derive from it
    assert [e.type for e in events][-1] == EventType.SUCCEEDED and {e.queue for e in events} == {"default"}


async def _with_type(js, job_id: str, last: EventType):
    events = await job_events(js, job_id)
    return events if events and events[-1].type == last else None


async def test_a_burst_reaches_every_idle_ready_bot(js, provisioned, bots):
    """Given two idle ready bots, when bursts of 100 jobs land at random points of their long-polls, then both run some of each burst."""
    import random

    import anyio

    pair = [bots(provisioned.url, name) for name in ("b1", "b2")]
    await eventually(lambda: _all_ready(pair), what="both bots ready")
    seen = 0
    for burst in range(5):
        # Not a wait for anything: it puts the burst at a random phase of the bots' 1 s long-polls,
        # where a bot whose long-poll had just expired used to stay deaf until its own timer fired.
        await anyio.sleep(random.uniform(0.3, 1.3))
        await _submit(js, "normal", 100)
        seen += 100
        results = await eventually(lambda seen=seen: _results(js, seen), timeout=30, what=f"burst {burst}'s 100 results")
        by_bot = {r.bot for r in results[seen - 100:]}
        assert by_bot == {"b1", "b2"}, f"burst {burst}: only {by_bot} ran jobs"


async def _all_ready(pair) -> bool:
    return all(b.ready() for b in pair)
