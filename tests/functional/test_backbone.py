"""The job backbone end to end: real nats-server, real bot processes, no sleeps."""

from __future__ import annotations

import signal

import nats
import nats.js.errors
import pytest

from corral.core.dlq import list_dead
from corral.core.errors import ErrorCode, ResultAlreadyRecordedError
from corral.core.jobrecord import read_record
from corral.core.history import Death, deaths, job_events, job_result, walk
from corral.core.messages import EventType, make_job
from corral.core.names import RESULTS_STREAM, job_results_subject, job_subject, result_fence, result_subject
from corral.core.connect import publish_error
from corral.core.submit import submit, submit_many
from corral.core.timeline import with_result
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


async def count_results(js, job_id: str) -> int:
    return len([m async for m in walk(js, RESULTS_STREAM, job_results_subject(job_id))])


async def test_a_submitted_job_completes_with_its_result_and_history(js, provisioned, bots):
    """Given a bot, when a sum job is submitted, then its result is 3 and its events read back."""
    bots(provisioned.url, "b1")
    job = make_job("sum", {"a": 1, "b": 2})
    await submit(js, job)
    result = await eventually(lambda: job_result(js, job.id), what="the result")
    assert result.value == 3 and result.bot == "b1" and result.attempt == 1
    assert await job_events(js, job.id) == []  # a first-delivery success: the result is the record
    trail = with_result([], result)
    assert [(e.type, e.bot, e.attempt) for e in trail] == [(EventType.STARTED, "b1", 1), (EventType.SUCCEEDED, "b1", 1)]


async def test_a_bot_with_full_events_writes_the_started_and_succeeded_a_result_implies_once(js, provisioned, bots):
    """Given a bot run with --full-events, when a job succeeds, then both events are written and the merged trail has each once."""
    bots(provisioned.url, "full", "--full-events")
    job = make_job("sum", {"a": 1, "b": 2})
    await submit(js, job)
    result = await eventually(lambda: job_result(js, job.id), what="the result")
    events = await eventually(lambda: _types_when(js, job.id, EventType.SUCCEEDED), what="succeeded event")
    assert events == [EventType.STARTED, EventType.SUCCEEDED]
    assert [e.type for e in with_result(await job_events(js, job.id), result)] == events


async def _types_when(js, job_id, last):
    types = [e.type for e in await job_events(js, job_id)]
    return types if types and types[-1] == last else None


async def test_a_duplicate_submit_is_one_job(js, provisioned, bots):
    """Given the same job submitted twice, then the stream stores it once and one result exists."""
    job = make_job("sum", {"a": 2, "b": 2})
    first = await submit(js, job)
    second = await submit(js, job)
    assert not first.duplicate and second.duplicate and first.seq == second.seq
    bots(provisioned.url, "b1")
    await eventually(lambda: job_result(js, job.id), what="the result")
    assert await count_results(js, job.id) == 1


async def test_a_bot_killed_mid_job_hands_it_to_another_bot_and_one_result_is_recorded(js, provisioned, bots):
    """Given bot A running a job, when A is SIGKILLed, then bot B completes it after the ack deadline."""
    a = bots(provisioned.url, "a")
    job = make_job("sleep", {"seconds": 1.5, "step": 0.1})
    await submit(js, job)
    await eventually(lambda: _started_by(js, job.id, "a"), what="bot a to start the job")
    a.kill()
    bots(provisioned.url, "b")
    result = await eventually(lambda: job_result(js, job.id), timeout=30, what="bot b's result")
    assert result.bot == "b" and result.attempt == 2
    assert await count_results(js, job.id) == 1


async def test_a_first_delivery_killed_mid_handler_runs_alone_on_redelivery_as_attempt_two(js, provisioned, bots):
    """Given the lean default and a bot SIGKILLed mid-handler, when another bot redelivers it, then it runs alone as attempt 2."""
    a = bots(provisioned.url, "a")
    job = make_job("sleep", {"seconds": 30, "step": 0.1})
    await submit(js, job)
    await eventually(lambda: _started_by(js, job.id, "a"), what="bot a to start the job")
    running = await read_record(js, job.id)
    assert (running.state, running.status) == ("active", "started")  # taken, though no event says so
    a.signal(signal.SIGKILL)
    a.wait()
    assert not [e for e in await job_events(js, job.id) if e.type == EventType.STARTED]  # lean: no first start
    bots(provisioned.url, "b")
    started = await eventually(lambda: _start_of(js, job.id, "b"), timeout=30, what="bot b to start the redelivery")
    assert started.attempt == 2 and started.isolated  # a suspect: the unrecorded first start died
    assert deaths(await job_events(js, job.id)) == [Death(1, "?", False), Death(2, "b", True)]  # b is still running it


async def _started_by(js, job_id, bot):
    """The bot has begun the handler: a first delivery writes no ``started``, so its progress or its result says so."""
    trail = with_result(await job_events(js, job_id), await job_result(js, job_id))
    return any(e.type in (EventType.STARTED, EventType.PROGRESS) and e.bot == bot for e in trail)


async def _start_of(js, job_id, bot):
    return next((e for e in await job_events(js, job_id) if e.type == EventType.STARTED and e.bot == bot), None)


async def test_a_frozen_bot_that_finishes_late_is_fenced_out(js, provisioned, bots):
    """Given bot A frozen past the ack deadline, when B completes the job and A wakes, then A's result is refused."""
    a = bots(provisioned.url, "a")
    # a must still be mid-job when it wakes after b's result; every second more here is waited
    # twice (b runs the whole job, then a finishes its part).
    job = make_job("sleep", {"seconds": 2, "step": 0.1})
    await submit(js, job)
    await eventually(lambda: _started_by(js, job.id, "a"), what="bot a to start the job")
    a.signal(signal.SIGSTOP)
    bots(provisioned.url, "b")
    result = await eventually(lambda: job_result(js, job.id), timeout=30, what="bot b's result")
    a.signal(signal.SIGCONT)
    await eventually(lambda: _async(lambda: "late finisher fenced" in a.log()), timeout=20, what="a to be fenced")
    assert result.bot == "b" and await count_results(js, job.id) == 1
    assert "late finisher fenced" in a.log()


async def _has(js, job_id, etype, bot):
    return any(e.type == etype and e.bot == bot for e in await job_events(js, job_id))


async def test_the_results_stream_refuses_a_second_result_for_a_job_from_any_bot(js, provisioned):
    """Given a job's result from bot a, when bot a or bot b publishes another, then the server refuses both (10071)."""
    await js.publish(result_subject("fenced", "a"), b"{}", headers=result_fence("fenced"))
    for bot in ("a", "b"):
        with pytest.raises(nats.js.errors.APIError) as caught:
            await js.publish(result_subject("fenced", bot), b"{}", headers=result_fence("fenced"))
        assert caught.value.err_code == ErrorCode.STREAM_WRONG_LAST_SEQUENCE
        assert isinstance(publish_error(caught.value, result_subject("fenced", bot)), ResultAlreadyRecordedError)
    assert await count_results(js, "fenced") == 1


async def test_a_job_that_always_fails_is_dead_lettered_with_its_reason(js, provisioned, bots):
    """Given a failing handler, then after max_attempts the job is in the DLQ with the error and attempts."""
    bots(provisioned.url, "b1", "--backoff-base", "0.2")
    job = make_job("fail", {"message": "boom"}, max_attempts=3)
    await submit(js, job)
    dead = await eventually(lambda: list_dead(js, match=lambda d: d.job_id == job.id), timeout=30, what="dead letter")
    assert dead[0].attempts == 3 and "boom" in dead[0].reason and dead[0].bots == "b1"
    types = [e.type for e in await job_events(js, job.id)]
    assert types.count(EventType.FAILED) == 3 and types[-1] == EventType.DEAD
    assert await job_result(js, job.id) is None


async def test_an_invalid_payload_is_dead_lettered_and_the_bot_keeps_working(js, provisioned, bots):
    """Given garbage on the jobs subject, then it lands in the DLQ with its bytes and the bot still completes work."""
    bot = bots(provisioned.url, "b1")
    await js.publish(job_subject("default"), b"\x00not a job")
    dead = await eventually(lambda: list_dead(js, match=lambda d: "invalid payload" in d.reason), what="dead letter")
    assert dead[0].data == b"\x00not a job" and dead[0].bots == "b1"
    job = make_job("sum", {"a": 5, "b": 5})
    await submit(js, job)
    assert (await eventually(lambda: job_result(js, job.id), what="next result")).value == 10
    assert bot.proc.poll() is None


async def test_a_job_that_kills_every_bot_is_quarantined_with_their_names(js, provisioned, bots):
    """Given a job whose handler kills the process, then after 3 deaths it is quarantined naming the bots."""
    job = make_job("crash", {}, max_attempts=10)
    await submit(js, job)
    names = []
    for i in range(6):
        name = f"victim{i}"
        bot = bots(provisioned.url, name)
        names.append(name)
        await eventually(lambda bot=bot: _bot_finished_or_dead(js, bot, job.id), timeout=30, what=f"{name} to die or quarantine")
        if await list_dead(js, match=lambda d: d.job_id == job.id):
            break
    dead = await list_dead(js, match=lambda d: d.job_id == job.id)
    assert dead and dead[0].reason.startswith("quarantined")
    assert set(dead[0].bots.split(",")) <= set(names[:-1]) and len(dead[0].bots.split(",")) >= 3


async def _bot_finished_or_dead(js, bot, job_id):
    return bot.proc.poll() is not None or bool(await list_dead(js, match=lambda d: d.job_id == job_id))


async def test_sigterm_drains_a_bot_without_losing_a_job(js, provisioned, bots):
    """Given running jobs, when the bot gets SIGTERM, then it exits 0 and every job still completes."""
    a = bots(provisioned.url, "a", "--concurrency", "4")
    jobs = [make_job("sleep", {"seconds": 0.5}) for _ in range(8)]
    await submit_many(js, jobs)
    await eventually(lambda: _started_by(js, jobs[0].id, "a"), what="work to start")
    a.signal(signal.SIGTERM)
    assert a.wait() == 0
    assert "event=bot.exit" in a.log() and "new=stopped" in a.log()
    bots(provisioned.url, "b")
    for job in jobs:
        await eventually(lambda job=job: job_result(js, job.id), timeout=30, what=f"result of {job.id}")
    assert not await list_dead(js)


async def test_a_drain_that_runs_out_of_time_hands_jobs_back(js, provisioned, bots):
    """Given a job longer than the drain timeout, when drained, then it is handed back and finished elsewhere."""
    a = bots(provisioned.url, "a", "--drain-timeout", "0.5")
    job = make_job("sleep", {"seconds": 2.5, "step": 0.1})  # 5x the drain timeout; b then runs all of it
    await submit(js, job)
    await eventually(lambda: _started_by(js, job.id, "a"), what="a to start")
    a.signal(signal.SIGTERM)
    assert a.wait() == 0
    assert await _has(js, job.id, EventType.HANDED_BACK, "a")
    bots(provisioned.url, "b")
    assert (await eventually(lambda: job_result(js, job.id), timeout=30, what="b's result")).bot == "b"


async def test_bots_ride_through_a_server_restart_and_every_job_completes(provisioned, bots):
    """Given bots mid-run, when the server is killed and restarted on the same store, then all jobs complete."""
    url = provisioned.url
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    b1, b2 = bots(url, "b1"), bots(url, "b2")
    # Both connected before the restart, or a bot slow to start under load never reconnects.
    await eventually(lambda: _async(lambda: b1.ready() and b2.ready()), timeout=30, what="both bots ready")
    jobs = [make_job("sleep", {"seconds": 0.1}) for _ in range(300)]  # ~2 s of work for 16 slots
    summary = await submit_many(js, jobs)
    assert summary.accepted == 300
    await eventually(lambda: _any_result(js, jobs), what="some progress")
    provisioned.kill()
    provisioned.start()
    await eventually(lambda: _all_done(js, jobs), timeout=60, what="every job's result")
    await eventually(lambda: _async(lambda: "nats.reconnected" in b1.log() and "nats.reconnected" in b2.log()),
                     what="both bots to reconnect")
    assert b1.proc.poll() is None and b2.proc.poll() is None
    await nc.close()


async def _any_result(js, jobs):
    return await job_result(js, jobs[0].id) is not None


async def _all_done(js, jobs):
    try:
        info = await js.stream_info(RESULTS_STREAM)
    except Exception:  # noqa: BLE001 - the server is still coming back
        return False
    return info.state.messages >= len(jobs) and all([await job_result(js, j.id) for j in jobs[:: max(len(jobs) // 20, 1)]])


async def test_a_second_live_bot_with_the_same_name_is_refused_and_the_name_is_reclaimed_after_death(js, provisioned, bots):
    """Given bot x alive, a second x exits non-zero; after x is SIGKILLed, a new x starts at once."""
    first = bots(provisioned.url, "x")
    await eventually(lambda: _async(first.ready), what="first x ready")
    second = bots(provisioned.url, "x")
    assert second.wait() != 0
    assert "held by a live bot" in second.log()
    first.kill()
    third = bots(provisioned.url, "x")
    await eventually(lambda: _async(third.ready), timeout=15, what="x reclaimed")
    assert "name.reclaimed" in third.log()


async def _async(fn):
    return fn()


async def test_a_bot_started_before_the_server_waits_then_works(tmp_path, bots):
    """Given no server yet, the bot logs that it waits; once the server is up and provisioned, it completes a job."""
    from corral.harness.server import EmbeddedServer
    from tests.conftest import provision_async

    server = EmbeddedServer(tmp_path / "late")
    bot = bots(server.url, "early")
    await eventually(lambda: _async(lambda: "nats.waiting" in bot.log()), what="the bot to say it waits")
    server.start()
    try:
        await eventually(lambda: _async(lambda: "resources.waiting" in bot.log()), what="the bot to wait for provisioning")
        await provision_async(server.url)
        await eventually(lambda: _async(bot.ready), timeout=20, what="bot ready")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        job = make_job("sum", {"a": 20, "b": 22})
        await submit(js, job)
        assert (await eventually(lambda: job_result(js, job.id), what="result")).value == 42
        await nc.close()
    finally:
        server.kill()


async def test_a_result_finished_while_the_server_is_down_survives_in_the_outbox(provisioned, bots):
    """Given a job finishing during an outage and its bot then killed, the restarted bot publishes the kept result."""
    url = provisioned.url
    bot = bots(url, "solo", "--publish-timeout", "1")
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    job = make_job("sleep", {"seconds": 1.5, "step": 0.1})
    await submit(js, job)
    await eventually(lambda: _started_by(js, job.id, "solo"), what="the job to start")
    provisioned.kill()
    await eventually(lambda: _async(lambda: "outbox.stored" in bot.log()), timeout=20, what="the result in the outbox")
    bot.kill()  # whatever nats-py buffered in memory dies with it; only the outbox remains
    provisioned.start()
    again = bots(url, "solo")
    result = await eventually(lambda: _result_or_none(js, job.id), timeout=30, what="the outboxed result")
    assert result.attempt == 1 and f"inc={result.incarnation}" not in again.log()  # the killed incarnation's result
    # The stored result can be read before the bot has logged its publish: wait for the line.
    await eventually(lambda: _async(lambda: "outbox.published" in again.log()), what="the outbox flush logged")
    assert await count_results(js, job.id) == 1
    await nc.close()


async def _result_or_none(js, job_id):
    try:
        return await job_result(js, job_id)
    except Exception:  # noqa: BLE001 - the server is still coming back
        return None


async def test_a_result_the_results_stream_cannot_take_yet_is_held_and_recorded_without_a_rerun(provisioned, bots):
    """Given the results stream gone while a job runs (as in a leader election), the bot holds the
    finished job, keeping its ack deadline alive, and records the result once the stream is back:
    one run, one attempt, nothing left in the outbox."""
    from tests.conftest import provision_async

    bot = bots(provisioned.url, "holder")
    nc = await nats.connect(provisioned.url)
    js = nc.jetstream()
    job = make_job("sleep", {"seconds": 1, "step": 0.1})
    await submit(js, job)
    await eventually(lambda: _started_by(js, job.id, "holder"), what="the job to start")
    await js.delete_stream(RESULTS_STREAM)
    await eventually(lambda: _async(lambda: "job.result_retry" in bot.log()), what="the bot retrying the result")
    await eventually(lambda: _async(lambda: bot.log().count("job.result_retry") >= 6), what="a hold past the 2 s ack deadline")
    await provision_async(provisioned.url)
    result = await eventually(lambda: _result_or_none(js, job.id), timeout=20, what="the held result")
    assert result.attempt == 1 and result.bot == "holder"
    events = [e.type for e in with_result(await job_events(js, job.id), result)]
    assert events.count(EventType.STARTED) == 1 and EventType.DUPLICATE not in events
    await eventually(lambda: _async(lambda: not list((bot.log_path.parent / "outbox-holder").glob("*.json"))),
                     what="the write-ahead outbox entry discarded")
    await nc.close()
