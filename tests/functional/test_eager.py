"""Eager runs (bots/eager.py) in a real in-process bot against a real server: plain first deliveries
run where they are taken and commit together, and every outcome is the full path's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
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
    await anyio.sleep(3600)


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
