"""Job features on a real server with real bots: schedules, expiry, cancellation, uniqueness, progress, chains."""

from __future__ import annotations

import datetime as dt
import time

import nats
import pytest

from corral.core import schedules
from corral.core.cancel import request_cancel
from corral.core.errors import InvalidJobError
from corral.core.history import job_events, job_result, walk
from corral.core.messages import EventType, JobResult, encode, make_job
from corral.core.backlog import unfinished
from corral.core.names import (
    JOBS_STREAM, RESULTS_STREAM, RESULTS_SUBJECT, job_results_subject, parse_result_subject, result_fence, result_subject,
)
from corral.core.submit import submit
from corral.core.unique import DuplicateJobError
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


async def _types(js, job_id):
    return [e.type for e in await job_events(js, job_id)]


async def _has_type(js, job_id, etype):
    return etype in await _types(js, job_id)


async def test_a_delayed_job_runs_no_earlier_than_its_time(js, provisioned, bots):
    """Given a job scheduled 2 s ahead, its handler starts at or after that time, once."""
    bots(provisioned.url, "b1")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    job = make_job("sum", {"a": 1, "b": 1})
    await schedules.add(js, job.id, job, schedules.spec_at(at))
    result = await eventually(lambda: job_result(js, job.id), timeout=15, what="the delayed job's result")
    assert result.started_at >= at.timestamp() - 0.05
    assert [s.name for s in await schedules.list_schedules(js)] == []  # an @at schedule removes itself


async def test_a_periodic_schedule_fires_as_separate_jobs_and_survives_a_restart(js, provisioned, bots):
    """Every firing is its own job id; after a server restart it keeps firing; rm stops it."""
    bots(provisioned.url, "b1")
    template = make_job("sum", {"a": 2, "b": 3})
    await schedules.add(js, "every-second", template, "@every 1s")
    await eventually(lambda: _firings(js, template.id, 2), timeout=15, what="two firings")
    await js._nc.close()
    provisioned.kill()
    provisioned.start()
    nc = await nats.connect(provisioned.url)
    js = nc.jetstream()
    before = len(await _firings(js, template.id, 0))
    await eventually(lambda: _firings(js, template.id, before + 2), timeout=20, what="firings after the restart")
    await schedules.remove(js, "every-second")
    assert await schedules.list_schedules(js) == []
    ids = await _firings(js, template.id, 0)
    assert len(ids) == len(set(ids)) and all(i.startswith(template.id + "-") for i in ids)
    await nc.close()


async def _firings(js, base_id, at_least):
    ids = [parse_result_subject(m.subject)[0] async for m in walk(js, RESULTS_STREAM, RESULTS_SUBJECT)]
    ids = [i for i in ids if i.startswith(base_id)]
    return ids if len(ids) >= at_least else None


async def test_a_bad_schedule_spec_is_refused_with_the_accepted_forms(js):
    """A spec the server would not understand is refused before anything is stored."""
    with pytest.raises(InvalidJobError, match="@every 10m"):
        await schedules.add(js, "bad", make_job("sum", {}), "every ten minutes")


async def test_an_expired_job_is_dropped_with_a_recorded_reason(js, provisioned, bots):
    """Given a job past its deadline when delivered, it never runs and its history says expired."""
    job = make_job("sum", {"a": 1, "b": 1}, expires_at=time.time() - 1)
    await submit(js, job)
    bots(provisioned.url, "b1")
    await eventually(lambda: _has_type(js, job.id, EventType.EXPIRED), what="the expired event")
    assert await job_result(js, job.id) is None and EventType.STARTED not in await _types(js, job.id)


async def test_a_cancelled_pending_job_never_runs(js, provisioned, bots):
    """Cancelled before any bot takes it: the job ends cancelled and has no result."""
    job = make_job("sum", {"a": 1, "b": 1})
    await submit(js, job)
    await request_cancel(js._nc, job.id, "tester@test")
    bots(provisioned.url, "b1")
    await eventually(lambda: _has_type(js, job.id, EventType.CANCELLED), what="the cancelled event")
    assert await job_result(js, job.id) is None
    assert await unfinished(js) == 0


async def test_a_running_job_reports_progress_and_stops_when_cancelled(js, provisioned, bots):
    """A long job reports progress; cancelling it interrupts the handler and the bot carries on."""
    bot = bots(provisioned.url, "b1")
    job = make_job("sleep", {"seconds": 60, "step": 0.2})
    await submit(js, job)
    await eventually(lambda: _has_type(js, job.id, EventType.PROGRESS), what="a progress event")
    await request_cancel(js._nc, job.id, "tester@test")
    await eventually(lambda: _has_type(js, job.id, EventType.CANCELLED), timeout=10, what="the cancelled event")
    assert await job_result(js, job.id) is None and bot.proc.poll() is None
    follow_up = make_job("sum", {"a": 1, "b": 2})
    await submit(js, follow_up)
    assert (await eventually(lambda: job_result(js, follow_up.id), what="the next job")).value == 3


async def test_a_unique_job_is_refused_while_the_first_is_pending_and_accepted_after_it_ends(js, provisioned, bots):
    """Same unique key: refused while pending, accepted again once the first completed."""
    first = make_job("sum", {"a": 1, "b": 1}, unique_key="report:2026-11-23")
    await submit(js, first)
    with pytest.raises(DuplicateJobError, match=first.id):
        await submit(js, make_job("sum", {"a": 1, "b": 1}, unique_key="report:2026-11-23"))
    bots(provisioned.url, "b1")
    await eventually(lambda: job_result(js, first.id), what="the first job's result")
    second = make_job("sum", {"a": 1, "b": 1}, unique_key="report:2026-11-23")
    await eventually(lambda: _submitted(js, second), what="the key to be released")


async def _submitted(js, job):
    try:
        await submit(js, job)
    except DuplicateJobError:
        return False
    return True


async def test_a_chain_passes_each_result_to_the_next_step(js, provisioned, bots):
    """sum(1, 2) then echo: the echo step receives previous=3."""
    bots(provisioned.url, "b1")
    job = make_job("sum", {"a": 1, "b": 2}, then=[make_job("echo", {"step": 2})])
    await submit(js, job)
    nxt = await eventually(lambda: job_result(js, f"{job.id}-then0"), what="the second step's result")
    assert nxt.value == {"step": 2, "previous": 3}


async def test_a_chain_continues_when_its_bot_died_after_recording_the_result(js, provisioned, bots):
    """Result recorded, next step never submitted, bot gone: the redelivery submits the next step without re-running."""
    job = make_job("sum", {"a": 20, "b": 22}, then=[make_job("echo", {})])
    await submit(js, job)
    sub = await js.pull_subscribe_bind(durable="work-default-normal", stream=JOBS_STREAM)
    (_msg,) = await sub.fetch(1, timeout=5)  # a "bot" takes it, records the result, and dies before continuing
    now = time.time()
    result = JobResult(job_id=job.id, kind="sum", queue="default", bot="ghost", incarnation="g", attempt=1,
                       started_at=now, finished_at=now, value=42, job=job)
    await js.publish(result_subject(job.id, "ghost"), encode(result), headers=result_fence(job.id))
    await sub.unsubscribe()
    bots(provisioned.url, "b1")
    nxt = await eventually(lambda: job_result(js, f"{job.id}-then0"), timeout=20, what="the continuation")
    assert nxt.value == {"previous": 42}
    assert EventType.STARTED not in await _types(js, job.id)  # the first step's handler did not run again


async def test_a_saga_whose_last_step_dies_runs_the_compensations_in_reverse_order(js, provisioned, bots):
    """reserve -> charge -> ship(fails): undo-charge runs, then undo-reserve; each gets the failure."""
    from corral.core.messages import Job

    bots(provisioned.url, "b1")
    ship = Job(kind="fail", args={"message": "shipping failed"}, max_attempts=1)
    charge = Job(kind="echo", args={"step": "charge"}, compensate=Job(kind="echo", args={"undo": "charge"}), then=[ship])
    saga = make_job("echo", {"step": "reserve"}, compensate=Job(kind="echo", args={"undo": "reserve"}), then=[charge])
    await submit(js, saga)
    ship_id = f"{saga.id}-then0-then0"
    undo_charge = await eventually(lambda: job_result(js, f"{ship_id}-comp0"), timeout=30, what="the first compensation")
    undo_reserve = await eventually(lambda: job_result(js, f"{ship_id}-comp0-then0"), timeout=30, what="the second compensation")
    assert undo_charge.value["undo"] == "charge" and "shipping failed" in undo_charge.value["failure"]
    assert undo_reserve.value["undo"] == "reserve" and undo_reserve.started_at >= undo_charge.finished_at
    assert EventType.COMPENSATING in await _types(js, ship_id)
    assert await job_result(js, ship_id) is None


async def test_a_leased_lock_serialises_holders_across_bots(js, provisioned, bots):
    """Two jobs want the same lock (on one bot or two): their locked sections do not overlap."""
    bots(provisioned.url, "b1")
    bots(provisioned.url, "b2")
    jobs = [make_job("locked_sleep", {"lock": "ledger", "seconds": 1.0, "lease": 3}) for _ in range(2)]
    for job in jobs:
        await submit(js, job)
    a, b = [await eventually(lambda j=j: job_result(js, j.id), timeout=30, what="both results") for j in jobs]
    assert abs(a.finished_at - b.finished_at) >= 0.95  # the second sleep began after the first released


async def test_a_lock_held_by_a_dead_bot_frees_itself_after_its_lease(js, provisioned, bots):
    """Bot 1 dies holding the lock; bot 2's job gets it once the 2 s lease lapses, not never."""
    holder = bots(provisioned.url, "holder")
    long = make_job("locked_sleep", {"lock": "l2", "seconds": 60, "lease": 2}, max_attempts=1)
    await submit(js, long)
    await eventually(lambda: _lock_held(js, "l2"), what="the holder to start and take the lock")
    holder.kill()
    bots(provisioned.url, "waiter")
    short = make_job("locked_sleep", {"lock": "l2", "seconds": 0.1, "lease": 2, "wait": 30})
    await submit(js, short)
    assert (await eventually(lambda: job_result(js, short.id), timeout=30, what="the waiter's result")).bot == "waiter"


async def _lock_held(js, name):
    import nats.js.errors

    try:
        msg = await js.get_msg("KV_corral_locks", subject=f"$KV.corral_locks.{name}", direct=True)
    except nats.js.errors.NotFoundError:
        return False
    return bool(msg.data)


async def test_a_group_runs_its_callback_once_when_every_member_has_finished(js, provisioned, bots):
    """5 members (one dies) fan in: the callback runs once, with each member's outcome, after the last."""
    from corral.core.groups import make_group

    bots(provisioned.url, "b1")
    bots(provisioned.url, "b2")
    members = [make_job("sum", {"a": i, "b": 1}) for i in range(4)] + [make_job("fail", {}, max_attempts=1)]
    callback = make_job("echo", {"report": "batch"})
    grouped = make_group(members, callback, group="batch-42")
    for job in grouped:
        await submit(js, job)
    done = await eventually(lambda: job_result(js, "batch-42-done"), timeout=30, what="the group's callback")
    outcomes = {k: v["outcome"] for k, v in done.value["members"].items()}
    assert outcomes == {**{m.id: "succeeded" for m in members[:4]}, members[4].id: "dead"}
    last_member = max([(await job_result(js, m.id)).finished_at for m in members[:4]])
    assert done.started_at >= last_member
    assert len([m async for m in walk(js, RESULTS_STREAM, job_results_subject("batch-42-done"))]) == 1


async def test_a_second_group_does_not_count_the_first_groups_members(js, provisioned):
    """Given group ga finished, when one of gb's two members finishes, then gb is not complete until the second."""
    from corral.core.groups import make_group, member_done

    ga = make_group([make_job("sum", {"a": i, "b": 1}) for i in range(2)], make_job("echo", {}), group="ga")
    gb = make_group([make_job("sum", {"a": i, "b": 1}) for i in range(2)], make_job("echo", {}), group="gb")
    assert await member_done(js, ga[0], "succeeded", 1) is None
    assert await member_done(js, ga[1], "succeeded", 2) is not None

    assert await member_done(js, gb[0], "succeeded", 1) is None
    assert set(await member_done(js, gb[1], "succeeded", 2) or {}) == {gb[0].id, gb[1].id}


async def test_the_seeds_population_is_a_schedule_whose_firings_each_submit_their_jobs_once(js, provisioned, bots):
    """`corral up`'s populate schedule: every firing submits `count` jobs under ids derived from the firing,
    and a re-run of a firing (a redelivery) adds nothing."""
    from corral.cli.up import POPULATE_SCHEDULE, _populate_schedule
    from corral.core.handlers import JobContext, populate_handler

    await _populate_schedule(js, "1s", 3)
    bots(provisioned.url, "b1")
    ids = await eventually(lambda: _populated(js, 6), timeout=20, what="two firings' jobs")
    firings = {i.rsplit("-", 1)[0] for i in ids}
    assert len(firings) >= 2 and all(f.startswith(f"{POPULATE_SCHEDULE}-") for f in firings)
    await _populate_schedule(js, "off", 3)
    assert await schedules.list_schedules(js) == []

    firing = make_job("populate", {"kind": "sum", "count": 3}, id=sorted(firings)[0])
    again = await populate_handler(firing.args, JobContext(job=firing, attempt=2, bot="test", js=js))
    assert again == {"accepted": 3, "duplicates": 3}


async def _populated(js, at_least):
    ids = [parse_result_subject(m.subject)[0] async for m in walk(js, RESULTS_STREAM, RESULTS_SUBJECT)]
    ids = [i for i in ids if i.startswith("populate-") and i.count("-") == 2]
    return ids if len(ids) >= at_least else None


async def test_a_job_cancelled_after_its_bot_died_is_not_run_again(js, provisioned, bots):
    """The running job's bot is SIGKILLed, then the job is cancelled: the redelivery on another bot
    ends it cancelled without running it, because the request lives in KV, not in the dead bot."""
    doomed = bots(provisioned.url, "doomed")
    job = make_job("sleep", {"seconds": 60, "step": 0.2})
    await submit(js, job)
    await eventually(lambda: _has_type(js, job.id, EventType.PROGRESS), what="the job running")
    doomed.kill()
    await request_cancel(js._nc, job.id, "tester@test")
    bots(provisioned.url, "heir")
    await eventually(lambda: _has_type(js, job.id, EventType.CANCELLED), timeout=15, what="the cancelled event")
    ended = [e for e in await job_events(js, job.id) if e.type == EventType.CANCELLED]
    assert [(e.bot, e.detail) for e in ended] == [("heir", "cancelled before it ran")]
    assert await job_result(js, job.id) is None


async def test_a_unique_key_held_by_a_job_whose_bot_died_is_released_when_it_ends_elsewhere(js, provisioned, bots):
    """The bot running a unique job is SIGKILLed: the key stays held (the job is still pending),
    another bot completes the redelivery and releases it, and the key is accepted again."""
    doomed = bots(provisioned.url, "doomed")
    first = make_job("sleep", {"seconds": 30, "step": 0.2}, unique_key="nightly", max_attempts=3)
    await submit(js, first)
    await eventually(lambda: _has_type(js, first.id, EventType.PROGRESS), what="the job running")
    doomed.kill()
    with pytest.raises(DuplicateJobError):
        await submit(js, make_job("sum", {"a": 1, "b": 1}, unique_key="nightly"))
    await request_cancel(js._nc, first.id, "tester@test")  # end it quickly on the heir
    bots(provisioned.url, "heir")
    await eventually(lambda: _has_type(js, first.id, EventType.CANCELLED), timeout=15, what="the redelivery ending")
    second = make_job("sum", {"a": 1, "b": 1}, unique_key="nightly")
    await eventually(lambda: _submitted(js, second), what="the key released by the heir")
