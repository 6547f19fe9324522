"""Poison without bystanders: a job that kills its bot is quarantined alone, its neighbours complete.

Three bot processes share a short ack deadline; every round submits sleepers
with one crasher among them, in one batch, so the crasher is claimed together
with sleepers and its first death takes them down too. A killed bot is replaced
at once under a new name, as the fleet supervisor would.
"""

from __future__ import annotations

import functools
import itertools

import anyio
import pytest

from corral.core.dlq import list_dead
from corral.core.history import deaths, job_events, job_result, walk
from corral.core.messages import EventType, make_job
from corral.core.names import RESULTS_STREAM, RESULTS_SUBJECT, parse_result_subject
from corral.core.submit import raise_for, submit_many
from corral.core.timeline import with_result
from tests.conftest import NS, eventually, provision_async

pytestmark = pytest.mark.anyio

#: Each round kills about two sleepers beside its crasher (measured: 33 in 20 rounds), so ten
#: rounds put well over a dozen innocent deaths before the quarantine rule.
ROUNDS = 10
SLEEPERS = 5


class Fleet:
    """Three bots, each replaced under a fresh name when it dies; remembers who died."""

    def __init__(self, start, url: str) -> None:
        self.start, self.url = start, url
        self.names = (f"p{i}" for i in itertools.count())
        self.alive = [start(url, next(self.names)) for _ in range(3)]
        self.dead: set[str] = set()

    async def supervise(self) -> None:
        while True:
            for i, bot in enumerate(self.alive):
                if not bot.alive:
                    self.dead.add(bot.name)
                    self.alive[i] = self.start(self.url, next(self.names))
            await anyio.sleep(0.05)


async def _round_done(js, sleepers, crasher):
    results = {parse_result_subject(m.subject)[0] async for m in walk(js, RESULTS_STREAM, RESULTS_SUBJECT)}
    if not all(s.id in results for s in sleepers):
        return None
    return await list_dead(js, match=lambda d: d.job_id == crasher.id)


@pytest.mark.timeout(240)  # 10 rounds of about 2 s (four ack deadlines each); the suite's default per test is 120 s
async def test_a_crashing_job_is_quarantined_alone_while_its_neighbours_complete_once(nats_server, bots, js_fast):
    """Given 3 bots and 10 rounds of sleepers plus one crasher, then every sleeper completes once and only crashers are dead."""
    fleet = Fleet(bots, nats_server.url)
    bystanders = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.supervise)
        for _ in range(ROUNDS):
            sleepers = [make_job("sleep", {"seconds": 0.5}) for _ in range(SLEEPERS)]
            crasher = make_job("crash", {}, max_attempts=10)
            batch = [*sleepers[:2], crasher, *sleepers[2:]]
            raise_for(await submit_many(js_fast, batch))
            dead = await eventually(functools.partial(_round_done, js_fast, sleepers, crasher), timeout=90, what="the round to end")
            assert dead[0].reason.startswith("quarantined")
            await _assert_names_only_its_victims(js_fast, crasher.id, dead[0].bots.split(","), fleet.dead)
            bystanders += sum([await _died_once(js_fast, s.id) for s in sleepers])
        tg.cancel_scope.cancel()
    letters = await list_dead(js_fast)
    assert len(letters) == ROUNDS and all(d.reason.startswith("quarantined") for d in letters)
    results = [m async for m in walk(js_fast, RESULTS_STREAM, "corral.results.>")]
    assert len(results) == ROUNDS * SLEEPERS
    assert bystanders > 0, "no sleeper ever died beside the crasher: the test did not exercise bystanders"


async def _died_once(js, job_id: str) -> bool:
    """The sleeper was taken down beside the crasher at least once (started, no outcome, redelivered).

    Its first delivery writes no ``started``: the trail with its result merged in says whether it died.
    """
    return bool(deaths(with_result(await job_events(js, job_id), await job_result(js, job_id))))


async def _assert_names_only_its_victims(js, job_id: str, named: list[str], dead: set[str]) -> None:
    """Each bot the dead letter names died, and had started the crasher alone (so nothing else killed it)."""
    alone = {e.bot for e in await job_events(js, job_id) if e.type == EventType.STARTED and e.isolated}
    assert named and set(named) <= dead and set(named) <= alone, (named, dead, alone)


@pytest.fixture
async def js_fast(nats_server):
    """The server provisioned with a 0.5 s ack deadline, and a JetStream context.

    A round takes four deadlines (the crasher dies once beside others, then three times alone), so
    the deadline sets the test's length; sleepers as long as it stay claimed through the bots' +WPI.
    """
    import nats

    await provision_async(nats_server.url, ack_wait=NS // 2)
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()
