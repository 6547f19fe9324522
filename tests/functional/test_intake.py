"""A bot's intake (bots/intake.py) against a real server: jobs that arrive while it waits start where
they are read, and every slot comes back."""

from __future__ import annotations

import anyio
import pytest

from corral.bots.bot import Bot
from corral.bots.config import BotConfig
from corral.core.handlers import BUILTINS, Registry
from corral.core.history import job_result
from corral.core.log import get_logger
from corral.core.messages import make_job
from corral.core.settings import Settings
from corral.core.submit import submit
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


def _bot(url: str, name: str) -> Bot:
    """An in-process bot with the built-in handlers and four slots."""
    return Bot(Settings(servers=(url,)), BotConfig(name=name, liveness_ttl=3, concurrency=4), get_logger("bot"),
               Registry(dict(BUILTINS)))


async def test_jobs_reaching_an_idle_bot_start_as_they_are_read_and_give_every_slot_back(js, provisioned):
    """Given an idle in-process bot, when jobs are submitted one at a time (each waiting for the one
    before to be recorded) and then a burst of 40 at once, then every job is recorded, most of the
    lone ones were started straight from the long-poll, and once the bot has drained and stopped it
    holds no job and every handler slot and place is free again."""
    bot = _bot(provisioned.url, "intake")
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(bot.run)
            try:
                await _submit_and_wait(js, bot)
            finally:
                bot.stop()  # a graceful drain: the pull loop gives back the slots it waits with
    slots = bot.intake._slots
    assert len(bot.inflight) == 0
    assert (slots.handlers.value, slots.places.value) == (slots.concurrency, slots.concurrency + slots.depth)
    assert bot.intake.direct_starts >= 5, bot.intake.direct_starts
    assert (await job_result(js, "lone-3")).value == 4


async def _submit_and_wait(js, bot: Bot) -> None:
    async def ready() -> bool:
        return getattr(bot, "feeds", None) is not None and bot.feeds.answered > 0

    async def recorded(job_ids: list[str]) -> bool:
        return all([await job_result(js, job_id) is not None for job_id in job_ids])

    await eventually(ready, what="the bot's feeds answering")
    for i in range(10):
        await submit(js, make_job("sum", {"a": i, "b": 1}, id=f"lone-{i}"))
        await eventually(lambda i=i: recorded([f"lone-{i}"]), what=f"lone-{i} recorded")
    for i in range(40):
        await submit(js, make_job("sum", {"a": i, "b": 2}, id=f"burst-{i}"))
    await eventually(lambda: recorded([f"burst-{i}" for i in range(40)]), what="the burst recorded")


async def test_a_forced_stop_of_a_waiting_bot_gives_every_slot_back(js, provisioned):
    """Given an idle in-process bot waiting in its long-poll, when it is stopped with force, then
    once it has ended every handler slot and place is free again."""
    bot = _bot(provisioned.url, "intake-force")
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(bot.run)

            async def waiting() -> bool:
                return getattr(bot, "feeds", None) is not None and bot.feeds.answered > 0 and bot.feeds.feeds[0].polling()

            await eventually(waiting, what="the bot waiting in its long-poll")
            bot.stop(force=True)
    slots = bot.intake._slots
    assert (slots.handlers.value, slots.places.value) == (slots.concurrency, slots.concurrency + slots.depth)
