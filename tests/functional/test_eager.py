"""Eager runs (bots/eager.py) in a real in-process bot against a real server: plain first deliveries
run where they are taken and commit together, and every outcome is the full path's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from corral.bots.bot import Bot
from corral.bots.config import BotConfig
from corral.core.cancel import request_cancel
from corral.core.dlq import dead_letters_of
from corral.core.handlers import JobContext, Registry
from corral.core.history import job_events, job_result
from corral.core.log import get_logger
from corral.core.messages import EventType, JobResult, encode, make_job
from corral.core.names import result_fence, result_subject
from corral.core.settings import Settings
from corral.core.submit import raise_for, submit, submit_many
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

MEETING = 4  #: how many ``meet`` jobs wait for each other


class _Meeting:
    """Handlers that can only finish if they run side by side."""

    def __init__(self) -> None:
        self.present = 0
        self.all_here: anyio.Event | None = None

    async def meet(self, args: dict, ctx: JobContext) -> str:
        # The scope opens before the first suspension: it must stay in the task that finishes the job.
        with anyio.fail_after(10):
            if self.all_here is None:
                self.all_here = anyio.Event()
            self.present += 1
            if self.present == MEETING:
                self.all_here.set()
            await self.all_here.wait()
        return f"met {args['i']}"


async def double(args: dict, ctx: JobContext) -> int:
    return args["n"] * 2


async def stuck(args: dict, ctx: JobContext) -> None:
    await anyio.sleep_forever()


async def boom(args: dict, ctx: JobContext) -> None:
    raise ValueError(f"boom {args['i']}")


@contextlib.asynccontextmanager
async def _bot(url: str, name: str, handlers: dict, **config) -> AsyncIterator[Bot]:
    config.setdefault("concurrency", 8)
    bot = Bot(Settings(servers=(url,)), BotConfig(name=name, liveness_ttl=3, **config), get_logger("bot"), Registry(handlers))
    async with anyio.create_task_group() as tg:
        tg.start_soon(bot.run)
        await eventually(_ready(bot), what="the bot's feeds answering")
        try:
            yield bot
        finally:
            bot.stop()


def _ready(bot: Bot):
    async def ready() -> bool:
        return getattr(bot, "feeds", None) is not None and bot.feeds.answered > 0
    return ready


async def _types(js, job_id: str) -> list[str]:
    return [e.type for e in await job_events(js, job_id)]


async def test_plain_jobs_run_eagerly_and_each_result_is_recorded_once(js, provisioned):
    """Given a bot with a no-op-like async handler, when 300 jobs are submitted at once, then each
    result is recorded with its value, every job ran eagerly without suspending, no first-delivery
    event was written, and after the bot stops every slot and place is free again."""
    async with _bot(provisioned.url, "eager-a", {"double": double}) as bot:
        raise_for(await submit_many(js, [make_job("double", {"n": i}, id=f"ea-{i}") for i in range(300)]))

        async def all_recorded() -> bool:
            return all([await job_result(js, f"ea-{i}") is not None for i in (0, 150, 299)]) and bot.executor.counters.done >= 300

        await eventually(all_recorded, what="300 results")
    assert bot.executor.counters.done == 300
    assert bot.executor.eager.runs == 300 and bot.executor.eager.suspended == 0
    assert (await job_result(js, "ea-150")).value == 300
    assert (await job_result(js, "ea-150")).bot == "eager-a"
    assert await _types(js, "ea-150") == []
    slots = bot.intake._slots
    assert len(bot.inflight) == 0
    assert (slots.handlers.value, slots.places.value) == (slots.concurrency, slots.concurrency + slots.depth)


async def test_suspending_handlers_run_side_by_side_each_in_its_own_task(js, provisioned):
    """Given handlers that open a cancel scope and then wait until all of them are running, when
    that many are submitted at once, then all succeed: they ran side by side, and each finished in
    the task that started it (a scope entered in one task and left in another would raise)."""
    meeting = _Meeting()
    async with _bot(provisioned.url, "eager-b", {"meet": meeting.meet}) as bot:
        raise_for(await submit_many(js, [make_job("meet", {"i": i}, id=f"eb-{i}") for i in range(MEETING)]))

        async def all_recorded() -> list | None:
            results = [await job_result(js, f"eb-{i}") for i in range(MEETING)]
            return results if all(results) else None

        results = await eventually(all_recorded, what="the meeting's results")
    assert sorted(r.value for r in results) == [f"met {i}" for i in range(MEETING)]
    assert bot.executor.eager.suspended == MEETING


async def test_a_suspended_eager_job_times_out_then_the_worker_runs_the_next_job(js, provisioned):
    """Given a handler that never returns, when it runs with a 0.5 s timeout and one attempt, then
    it is dead-lettered as timed out, and the bot's workers go on running jobs afterwards (the
    cancellation that ended it was taken back)."""
    async with _bot(provisioned.url, "eager-c", {"stuck": stuck, "double": double}, concurrency=2) as bot:
        await submit(js, make_job("stuck", {}, id="ec-stuck", timeout=0.5, max_attempts=1))

        async def dead() -> list:
            return await dead_letters_of(js, "ec-stuck")

        [letter] = await eventually(dead, what="the stuck job's dead letter")
        assert "timed out after 0.5s" in letter.reason
        for i in range(6):
            await submit(js, make_job("double", {"n": i}, id=f"ec-{i}"))

        async def recorded() -> bool:
            return all([await job_result(js, f"ec-{i}") is not None for i in range(6)])

        await eventually(recorded, what="the jobs after the timeout")
    assert EventType.FAILED in await _types(js, "ec-stuck")
    assert bot.executor.eager.runs == 7 and bot.executor.eager.suspended == 1


async def test_cancel_reaches_a_suspended_eager_job(js, provisioned):
    """Given a handler that never returns, running eagerly, when the job is cancelled, then it ends
    ``cancelled`` without a result, and the bot still runs the next job."""
    async with _bot(provisioned.url, "eager-d", {"stuck": stuck, "double": double}) as bot:
        await submit(js, make_job("stuck", {}, id="ed-stuck", timeout=600))

        async def running() -> bool:
            return "ed-stuck" in bot.executor.running

        await eventually(running, what="the stuck job running")
        await request_cancel(js._nc, "ed-stuck", "test")

        async def cancelled() -> bool:
            return EventType.CANCELLED in await _types(js, "ed-stuck")

        await eventually(cancelled, what="the cancelled event")
        await submit(js, make_job("double", {"n": 21}, id="ed-next"))

        async def next_recorded():
            return await job_result(js, "ed-next")

        assert (await eventually(next_recorded, what="the next job")).value == 42
    assert await job_result(js, "ed-stuck") is None
    assert bot.executor.eager.runs == 2 and bot.executor.eager.suspended == 1


async def test_a_failing_handler_is_retried_and_then_dead_lettered_as_on_the_full_path(js, provisioned):
    """Given a handler that raises, when its job has two attempts, then two failures are recorded,
    the second delivery took the full path, and the job is dead-lettered with the handler's error."""
    async with _bot(provisioned.url, "eager-e", {"boom": boom}, backoff_base=0.05, backoff_max=0.1) as bot:
        await submit(js, make_job("boom", {"i": 7}, id="ee-boom", max_attempts=2))

        async def dead() -> list:
            return await dead_letters_of(js, "ee-boom")

        [letter] = await eventually(dead, what="the dead letter")
    assert "ValueError: boom 7" in letter.reason
    assert (await _types(js, "ee-boom")).count(EventType.FAILED) == 2
    assert bot.executor.eager.runs == 1  # the redelivery is not a first delivery


async def test_a_result_another_writer_recorded_first_fences_the_eager_commit(js, provisioned):
    """Given a result for a job already recorded by another bot, when the job's first delivery runs
    eagerly, then its commit is refused by the fence: the job is acked, a ``duplicate`` event says a
    late finisher was fenced, and the stored result is still the other bot's."""
    theirs = JobResult(job_id="ef-taken", kind="double", queue="default", bot="other", incarnation="i", attempt=1,
                       started_at=1.0, finished_at=2.0, value="theirs")
    await js.publish(result_subject("ef-taken", "other"), encode(theirs), headers=result_fence("ef-taken"))
    async with _bot(provisioned.url, "eager-f", {"double": double}) as bot:
        await submit(js, make_job("double", {"n": 1}, id="ef-taken"))

        async def fenced() -> bool:
            return EventType.DUPLICATE in await _types(js, "ef-taken")

        await eventually(fenced, what="the duplicate event")
    assert bot.executor.counters.duplicates == 1 and bot.executor.counters.done == 0
    assert bot.executor.eager.runs == 1
    stored = await job_result(js, "ef-taken")
    assert (stored.bot, stored.value) == ("other", "theirs")


async def test_a_drain_hands_back_a_suspended_eager_job(js, provisioned):
    """Given a handler that never returns, running eagerly, when the bot drains with a short drain
    timeout, then the job is handed back unfinished (``handed_back``), not left to its ack deadline."""
    async with _bot(provisioned.url, "eager-g", {"stuck": stuck}, drain_timeout=0.3) as bot:
        await submit(js, make_job("stuck", {}, id="eg-stuck", timeout=600))

        async def running() -> bool:
            return "eg-stuck" in bot.executor.running

        await eventually(running, what="the stuck job running")
    # The context manager stopped the bot and waited for it to end.

    async def handed_back() -> bool:
        return EventType.HANDED_BACK in await _types(js, "eg-stuck")

    await eventually(handed_back, what="the handed_back event")
    assert len(bot.inflight) == 0
    assert bot.executor.eager.suspended == 1


class _Gate:
    """A handler that waits until the test opens its gate; ``entered`` is set once it waits."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.opened = anyio.Event()

    async def wait(self, args: dict, ctx: JobContext) -> str:
        self.entered.set()
        await self.opened.wait()
        return "opened"


async def test_a_finished_job_is_recorded_while_a_slow_job_taken_after_it_still_runs(js, provisioned):
    """Given a quick job and then a job that waits, queued before the bot starts so that one worker
    takes both, when the second is still waiting, then the first one's result is already recorded
    and the job acked: it did not wait for the slow job behind it."""
    gate = _Gate()
    raise_for(await submit_many(js, [make_job("double", {"n": 4}, id="eh-quick"), make_job("wait", {}, id="eh-slow")]))
    async with _bot(provisioned.url, "eager-h", {"double": double, "wait": gate.wait}) as bot:
        with anyio.fail_after(10):
            await gate.entered.wait()

        async def quick_recorded():
            return await job_result(js, "eh-quick")

        assert (await eventually(quick_recorded, what="the quick job's result")).value == 8
        assert "eh-slow" in bot.executor.running and not gate.opened.is_set()
        gate.opened.set()

        async def slow_recorded():
            return await job_result(js, "eh-slow")

        assert (await eventually(slow_recorded, what="the slow job's result")).value == "opened"
    assert bot.executor.eager.runs == 2


async def reports(args: dict, ctx: JobContext) -> str:
    ctx.progress(50)
    ctx.progress(75, "nearly")
    return "reported"


async def shielded(args: dict, ctx: JobContext) -> str:
    with anyio.CancelScope(shield=True):
        await anyio.sleep(0.6)  # past its 0.2 s timeout, shielded
    return "shield held"


async def swallows(args: dict, ctx: JobContext) -> str:
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class():
        pass  # swallowed once: the next await is cancelled again
    await anyio.sleep_forever()
    return "escaped"


async def test_a_handler_reporting_progress_runs_eagerly_as_on_the_full_path(js, provisioned):
    """Given a handler that reports progress with and without a message, when it runs eagerly,
    then it succeeds."""
    async with _bot(provisioned.url, "eager-i", {"reports": reports}) as bot:
        await submit(js, make_job("reports", {}, id="ei-1"))

        async def recorded():
            return await job_result(js, "ei-1")

        assert (await eventually(recorded, what="the result")).value == "reported"
    assert bot.executor.eager.runs == 1


async def test_a_timeout_is_anyios_cancel_a_shield_holds_and_a_swallowed_cancel_comes_again(js, provisioned):
    """Given a handler whose shielded section outlasts its timeout, and one that swallows the
    cancellation once and then awaits again, when both run eagerly with a 0.2 s timeout and one
    attempt, then the first returns its value once the shield ends, and the second is cancelled
    again at its next await and dead-lettered as timed out."""
    async with _bot(provisioned.url, "eager-j", {"shielded": shielded, "swallows": swallows}) as bot:
        await submit(js, make_job("shielded", {}, id="ej-shield", timeout=0.2, max_attempts=1))
        await submit(js, make_job("swallows", {}, id="ej-swallow", timeout=0.2, max_attempts=1))

        async def shield_recorded():
            return await job_result(js, "ej-shield")

        async def swallow_dead():
            return await dead_letters_of(js, "ej-swallow")

        assert (await eventually(shield_recorded, what="the shielded job's result")).value == "shield held"
        [letter] = await eventually(swallow_dead, what="the swallowing job's dead letter")
    assert "timed out after 0.2s" in letter.reason
    assert bot.executor.eager.suspended == 2


async def test_a_drain_during_a_timed_out_jobs_cleanup_hands_it_back_and_does_not_bury_it(js, provisioned):
    """Given a handler that, once its timeout cancels it, cleans up under a shield, when the bot
    drains during that cleanup and the drain's deadline passes, then the job is handed back, not
    dead-lettered: the drain's cancel is not taken for the job's own timeout."""
    cleaning = anyio.Event()

    async def cleans_up(args: dict, ctx: JobContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaning.set()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1.0)  # a protected cleanup that outlasts the drain's deadline

    async with _bot(provisioned.url, "eager-k", {"cleans": cleans_up}, drain_timeout=0.2):
        await submit(js, make_job("cleans", {}, id="ek-1", timeout=0.3, max_attempts=1))
        with anyio.fail_after(10):
            await cleaning.wait()

    async def handed_back() -> bool:
        return EventType.HANDED_BACK in await _types(js, "ek-1")

    await eventually(handed_back, what="the handed_back event")
    assert await dead_letters_of(js, "ek-1") == []
    assert EventType.FAILED not in await _types(js, "ek-1")


async def test_events_written_while_settling_an_eager_job_carry_its_trace_id(js, provisioned):
    """Given a job submitted with a traceparent whose handler raises, when it runs eagerly, then its
    ``failed`` event carries the submitter's trace id, as on the full path."""
    trace_id = "ab" * 16
    async with _bot(provisioned.url, "eager-l", {"boom": boom}) as bot:
        await submit(js, make_job("boom", {"i": 1}, id="el-1", max_attempts=3), traceparent=f"00-{trace_id}-{'cd' * 8}-01")

        async def failed():
            return [e for e in await job_events(js, "el-1") if e.type == EventType.FAILED]

        [event, *_] = await eventually(failed, what="the failed event")
    assert event.trace_id == trace_id
    assert bot.executor.eager.runs >= 1


class _Opaque:
    """Not something a result can hold."""


async def returns_opaque(args: dict, ctx: JobContext) -> _Opaque:
    await anyio.lowlevel.checkpoint()  # suspends first: the value is encoded after the resumed run
    return _Opaque()


async def test_an_unencodable_value_after_a_suspension_fails_the_attempt_and_the_bot_runs_on(js, provisioned):
    """Given a handler that suspends and then returns a value msgspec cannot encode, when it runs
    eagerly with one attempt, then it is dead-lettered with the encoder's error (as on the full
    path) and the bot goes on running jobs."""
    async with _bot(provisioned.url, "eager-m", {"opaque": returns_opaque, "double": double}) as bot:
        await submit(js, make_job("opaque", {}, id="em-1", max_attempts=1))

        async def dead() -> list:
            return await dead_letters_of(js, "em-1")

        [letter] = await eventually(dead, what="the dead letter")
        await submit(js, make_job("double", {"n": 5}, id="em-next"))

        async def next_recorded():
            return await job_result(js, "em-next")

        assert (await eventually(next_recorded, what="the next job")).value == 10
    assert "TypeError" in letter.reason and "unsupported" in letter.reason
    assert bot.executor.eager.suspended == 1
