"""Group commit of results (bots/commit.py) and the results stream's layout against a real server."""

from __future__ import annotations

import json

import anyio
import nats
import pytest

from corral.bots.commit import Committer
from corral.core.errors import ResultAlreadyRecordedError
from corral.core.history import job_result, result_message, results_per_job
from corral.core.jsapi import api
from corral.core.log import get_logger
from corral.core.messages import JobResult, encode
from corral.core.names import (
    LEDGER_CONSUMERS, RESULTS_STREAM, consumer_op, legacy_result_subject, result_fence, result_subject, stream_op,
)
from corral.core.publisher import AsyncPublisher
from corral.streams import load_declarations
from corral.streams.provision import provision

pytestmark = pytest.mark.anyio


def _result(job_id: str, bot: str = "b1") -> bytes:
    return encode(JobResult(job_id=job_id, kind="sum", queue="default", bot=bot, incarnation="i", attempt=1,
                            started_at=1.0, finished_at=2.0, value=job_id))


async def _commit_all(committer: Committer, job_ids: list[str], bot: str = "b1") -> dict[str, Exception | None]:
    """Commit every job's result at once, as a busy bot's slots would; each one's outcome."""
    outcomes: dict[str, Exception | None] = {}

    async def one(job_id: str) -> None:
        outcomes[job_id] = await committer.commit(result_subject(job_id, bot), _result(job_id, bot), result_fence(job_id))

    async with anyio.create_task_group() as tg:
        for job_id in job_ids:
            tg.start_soon(one, job_id)
    return outcomes


@pytest.fixture
async def committer(js):
    return Committer(AsyncPublisher(js, get_logger("test")), min_batch=2)


async def test_a_result_that_finds_nothing_in_flight_is_published_alone(js, committer):
    """Given an idle committer, when one result is committed, then it is stored by a plain publish, not a batch."""
    assert await committer.commit(result_subject("solo", "b1"), _result("solo"), result_fence("solo")) is None
    assert committer.stats.singles == 1 and committer.stats.batches == 0
    assert (await job_result(js, "solo")).value == "solo"


async def test_results_that_finish_while_a_commit_is_in_flight_are_committed_as_one_batch(js, committer):
    """Given 50 results finishing at once, when committed, then the first goes alone, the other 49 as one
    atomic batch, and every job's result is stored once."""
    ids = [f"busy-{i}" for i in range(50)]
    outcomes = await _commit_all(committer, ids)
    assert outcomes == {i: None for i in ids}
    assert (committer.stats.singles, committer.stats.batches, committer.stats.batched) == (1, 1, 49)
    counts = await results_per_job(js)
    assert all(counts[i] == 1 for i in ids)


async def test_a_batch_holding_a_job_already_recorded_falls_back_so_only_that_job_is_fenced(js, committer):
    """Given job taken recorded by bot b2, when b1 commits a batch with taken among others, then the batch is
    refused whole, the fallback stores the others, and only taken is answered as already recorded."""
    await js.publish(result_subject("taken", "b2"), _result("taken", "b2"), headers=result_fence("taken"))
    outcomes = await _commit_all(committer, ["warm", "a", "taken", "b"])
    assert committer.stats.fallbacks == 1
    assert isinstance(outcomes.pop("taken"), ResultAlreadyRecordedError)
    assert outcomes == {"warm": None, "a": None, "b": None}
    assert (await result_message(js, "taken")).subject == result_subject("taken", "b2")
    assert (await results_per_job(js))["taken"] == 1


async def test_a_batch_is_capped_and_the_rest_forms_the_next_round(js):
    """Given a cap of 10, when 31 results finish at once, then they commit as 1 alone and 3 batches of 10."""
    committer = Committer(AsyncPublisher(js, get_logger("test")), max_batch=10, min_batch=2)
    outcomes = await _commit_all(committer, [f"cap-{i}" for i in range(31)])
    assert set(outcomes.values()) == {None}
    assert (committer.stats.singles, committer.stats.batches, committer.stats.batched) == (1, 3, 30)


async def test_a_round_smaller_than_the_minimum_batch_is_published_one_by_one(js):
    """Given the default minimum batch, when 8 results finish at once, then none is batched and all are stored."""
    committer = Committer(AsyncPublisher(js, get_logger("test")))
    ids = [f"few-{i}" for i in range(8)]
    assert set((await _commit_all(committer, ids)).values()) == {None}
    assert committer.stats.singles == 8 and committer.stats.batches == 0


async def test_without_group_commit_every_result_is_published_at_once_on_its_own(js):
    """Given a committer with batching off (a lazy-fsync server), when 20 results finish at once, then each is
    published on its own, no batch is formed, and every result is stored once."""
    committer = Committer(AsyncPublisher(js, get_logger("test")), batching=False)
    ids = [f"alone-{i}" for i in range(20)]
    assert set((await _commit_all(committer, ids)).values()) == {None}
    assert committer.stats.direct == 20 and committer.stats.batches == 0
    counts = await results_per_job(js)
    assert all(counts[i] == 1 for i in ids)


async def _old_results_store(url: str) -> None:
    """CORRAL_RESULTS and its ledger consumer as the previous version made them, with one old result."""
    nc = await nats.connect(url)
    decl = {d.name: d for d in load_declarations()}
    old = {**decl[RESULTS_STREAM].body, "subjects": ["corral.results.*"]}
    old.pop("allow_atomic")
    await api(nc, stream_op("CREATE", RESULTS_STREAM), old)
    ledger = decl[LEDGER_CONSUMERS[RESULTS_STREAM]]
    body = {**ledger.body, "config": {**ledger.body["config"], "filter_subject": "corral.results.*"}, "action": "create"}
    await api(nc, consumer_op("CREATE", RESULTS_STREAM, ledger.name), body)
    await nc.request(legacy_result_subject("old-job"), _result("old-job", "old-bot"), timeout=5)
    await nc.close()


async def test_provisioning_moves_a_previous_store_to_the_new_layout_and_old_results_stay_readable(nats_server):
    """Given a results stream of the previous layout holding a result, when provisioned, then the stream takes
    per-bot subjects and atomic batches in place, the ledger consumer follows, and the old result still reads."""
    await _old_results_store(nats_server.url)
    nc = await nats.connect(nats_server.url)
    await provision(nc, load_declarations())
    info = await api(nc, stream_op("INFO", RESULTS_STREAM))
    assert set(info["config"]["subjects"]) == {"corral.results.*.*", "corral.results.*"} and info["config"]["allow_atomic"]
    consumer = await api(nc, consumer_op("INFO", RESULTS_STREAM, LEDGER_CONSUMERS[RESULTS_STREAM]))
    assert consumer["config"]["filter_subject"] == "corral.results.>"
    js = nc.jetstream()
    assert (await job_result(js, "old-job")).value == "old-job"
    committer = Committer(AsyncPublisher(js, get_logger("test")), min_batch=2)
    assert set((await _commit_all(committer, ["new-1", "new-2", "new-3"])).values()) == {None}
    assert committer.stats.batches == 1
    assert json.loads((await result_message(js, "new-2")).data)["value"] == "new-2"
    await nc.close()


async def test_a_result_reads_back_with_the_bot_its_subject_names_whatever_its_body_claims(js):
    """Given a result written under b1 whose body names another bot, when read back, then its bot is b1."""
    await js.publish(result_subject("liar", "b1"), _result("liar", "someone-else"), headers=result_fence("liar"))
    assert (await job_result(js, "liar")).bot == "b1"
