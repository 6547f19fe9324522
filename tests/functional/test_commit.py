"""Group commit of results (bots/commit.py) and the results stream's layout against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import anyio.lowlevel
import nats
import pytest


from corral.bots.commit import Chooser, Committer
from corral.core.errors import ResultAlreadyRecordedError, TransportError
from corral.core.history import job_result, result_message, results_per_job
from corral.core.jsapi import api
from corral.core.log import get_logger
from corral.core.messages import JobResult, encode
from corral.core.names import (
    LEDGER_CONSUMERS, RESULTS_STREAM, consumer_op, legacy_result_subject, result_fence, result_subject, stream_op,
)
from corral.core.publisher import AsyncPublisher
from corral.harness.server import EmbeddedServer
from tests.conftest import provision_async
from corral.bench.server import config_with_sync
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
    return Committer(AsyncPublisher(js, get_logger("test")), min_batch=2, adaptive=False)


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
    committer = Committer(AsyncPublisher(js, get_logger("test")), max_batch=10, min_batch=2, adaptive=False)
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


async def _settle_on_a_mode(url: str, watch: Callable[[Chooser], None] | None = None) -> Committer:
    """A committer after 20 rounds of 40 results on the server at ``url``; ``watch`` sees its chooser first."""
    await provision_async(url)
    nc = await nats.connect(url)
    try:
        committer = Committer(AsyncPublisher(nc.jetstream(), get_logger("test")))
        if watch is not None:
            watch(committer.chooser)
        for r in range(20):
            outcomes = await _commit_all(committer, [f"adapt-{r}-{i}" for i in range(41)])
            assert set(outcomes.values()) == {None}
        return committer
    finally:
        await nc.close()


async def test_on_a_server_that_fsyncs_every_write_the_committer_settles_on_atomic_batches(nats_server):
    """Given a server with sync_interval always, when many rounds of results are committed, then the committer
    has measured both ways and commits its rounds as atomic batches."""
    committer = await _settle_on_a_mode(nats_server.url)
    chooser = committer.chooser
    assert chooser.per_result[True] is not None and chooser.per_result[False] is not None
    assert chooser.prefers_batch and committer.stats.batches >= 8


async def test_on_a_lazy_fsync_server_the_committer_commits_the_way_it_measured_cheaper(tmp_path):
    """Given a server left at the lazy default fsync, when many rounds of results are committed, then the
    committer has measured both ways, and after its warm-up it committed every round (bar probes) the
    way its estimates, measured on that server, said was cheaper at the time.

    Which way that is depends on the disk: a batch pays one flush, single publishes one acknowledgement
    each, so on an idle fast disk batches can win even here, and where the two sit near the margin the
    choice may change from round to round (the lazy case that must choose single publishes is the
    next test's)."""
    server = EmbeddedServer(tmp_path / "nats", config=config_with_sync(tmp_path, "2m")).start()
    rounds: list[tuple[bool, bool, bool, bool]] = []  # (warming, preferred batch, batched, probe)

    def recording(chooser: Chooser) -> None:
        choose = chooser.choose

        def wrapped() -> tuple[bool, bool]:
            warming, preferred = chooser.warming, chooser.prefers_batch
            batched, probe = choose()
            rounds.append((warming, preferred, batched, probe))
            return batched, probe
        chooser.choose = wrapped  # type: ignore[method-assign]

    try:
        committer = await _settle_on_a_mode(server.url, recording)
    finally:
        server.kill()
    chooser = committer.chooser
    assert min(chooser.samples.values()) >= 2  # warm-up: at least two rounds each way
    settled = [(preferred, batched) for warming, preferred, batched, probe in rounds if not warming and not probe]
    assert len(settled) >= 6, rounds
    assert all(preferred == batched for preferred, batched in settled), rounds


async def test_where_every_batch_is_refused_the_committer_settles_on_single_publishes(nats_server):
    """Given a results stream made without allow_atomic, when many rounds are committed, then every result is
    stored once and the committer, having timed the refused batches and their fallbacks, publishes one by one."""
    nc = await nats.connect(nats_server.url)
    try:
        body = {**{d.name: d for d in load_declarations()}[RESULTS_STREAM].body}
        body.pop("allow_atomic")
        await api(nc, stream_op("CREATE", RESULTS_STREAM), body)
        committer = Committer(AsyncPublisher(nc.jetstream(), get_logger("test")))
        for r in range(14):
            outcomes = await _commit_all(committer, [f"noatomic-{r}-{i}" for i in range(41)])
            assert set(outcomes.values()) == {None}
        counts = await results_per_job(nc.jetstream())
    finally:
        await nc.close()
    assert not committer.chooser.prefers_batch, (committer.chooser.per_result, committer.stats)
    assert committer.stats.batches == 0 and committer.stats.fallbacks >= 3
    assert sorted(n for job, n in counts.items() if job.startswith("noatomic-")) == [1] * 14 * 41


def test_both_ways_are_measured_in_turn_before_either_is_chosen():
    """Given a fresh chooser, when six rounds are chosen and timed alike, then they alternate, batching first."""
    chooser = Chooser(warmup=3)
    picks = []
    for _ in range(6):
        batched, _probe = chooser.choose()
        picks.append(batched)
        chooser.learn(batched, 0.001, 10)
    assert picks == [True, False] * 3


def test_warm_up_ends_after_two_rounds_each_where_one_way_is_far_cheaper():
    """Given single publishes measured at a tenth of the batches' cost, when rounds are chosen, then after
    two rounds of each the chooser stops alternating and publishes one by one."""
    chooser = Chooser(warmup=5, probe_seconds=3600)
    picks = []
    for _ in range(8):
        batched, _probe = chooser.choose()
        picks.append(batched)
        chooser.learn(batched, 0.010 if batched else 0.001, 10)
    assert picks == [True, False, True, False, False, False, False, False]


def test_probes_come_no_more_often_than_their_interval_in_seconds():
    """Given a chooser that prefers batches and probes every 10 rounds but at most once an hour, when
    100 rounds are chosen at once, then only the first probe is made."""
    chooser = Chooser(probe_every=10, warmup=1, probe_seconds=3600)
    chooser.last_probe_at -= 3600  # the hour since the last probe has passed
    chooser.learn(True, 0.001, 100)
    chooser.learn(False, 0.010, 100)
    picks = [chooser.choose() for _ in range(100)]
    assert picks.count((False, True)) == 1 and picks.count((True, False)) == 99


def test_a_slower_mode_is_tried_again_now_and_then_so_a_changed_server_is_noticed():
    """Given a chooser that has measured batches as cheaper, when 100 rounds are chosen, then two of them
    publish one by one as probes and the rest are batched."""
    chooser = Chooser(probe_every=50, warmup=1, probe_seconds=0)
    chooser.learn(True, 0.001, 100)
    chooser.learn(False, 0.010, 100)
    picks = [chooser.choose() for _ in range(100)]
    assert picks.count((False, True)) == 2 and picks.count((True, False)) == 98


def test_an_estimate_follows_the_server_when_its_speed_changes():
    """Given batches measured cheaper, when later batch rounds turn slow, then single publishes become preferred."""
    chooser = Chooser(warmup=1)
    chooser.learn(True, 0.001, 100)
    chooser.learn(False, 0.005, 100)
    assert chooser.prefers_batch
    for _ in range(20):
        chooser.learn(True, 0.030, 100)
    assert not chooser.prefers_batch


def test_a_few_slow_rounds_do_not_outvote_the_median():
    """Given batches usually twice as cheap as single publishes, when a third of the batch rounds are
    ten times slower (a busy bot's queueing), then batching is still preferred."""
    chooser = Chooser(warmup=1)
    for i in range(9):
        chooser.learn(True, 0.010 if i % 3 == 0 else 0.001, 10)
        chooser.learn(False, 0.002, 10)
    assert chooser.prefers_batch, chooser.per_result


def test_single_publishes_are_chosen_only_when_clearly_cheaper():
    """Given single publishes measured 10 % cheaper than batches, batching stays; at a third of the
    cost, single publishes are chosen."""
    chooser = Chooser(warmup=1)
    chooser.learn(True, 0.0010, 1)
    chooser.learn(False, 0.0009, 1)
    assert chooser.prefers_batch
    for _ in range(9):
        chooser.learn(False, 0.0003, 1)
    assert not chooser.prefers_batch


def test_a_stream_that_keeps_refusing_batches_gets_single_publishes_until_a_batch_is_stored():
    """Given batches measured cheaper, when the stream refuses warmup-many batches in a row, single
    publishes are preferred; a refusal count back at zero (a stored probe) restores batching."""
    chooser = Chooser(warmup=3)
    for batched in (True, False) * 3:
        chooser.learn(batched, 0.001 if batched else 0.005, 10)
    assert chooser.prefers_batch
    for _ in range(3):  # refused batches: timed with their fallback, slower than single publishes
        chooser.refusals += 1
        chooser.learn(True, 0.012, 10)
    assert not chooser.prefers_batch
    chooser.stored_batch()  # a probe's batch is stored: the refused rounds' times are forgotten
    assert chooser.prefers_batch


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
    committer = Committer(AsyncPublisher(js, get_logger("test")), min_batch=2, adaptive=False)
    assert set((await _commit_all(committer, ["new-1", "new-2", "new-3"])).values()) == {None}
    assert committer.stats.batches == 1
    assert json.loads((await result_message(js, "new-2")).data)["value"] == "new-2"
    await nc.close()


async def test_a_result_reads_back_with_the_bot_its_subject_names_whatever_its_body_claims(js):
    """Given a result written under b1 whose body names another bot, when read back, then its bot is b1."""
    await js.publish(result_subject("liar", "b1"), _result("liar", "someone-else"), headers=result_fence("liar"))
    assert (await job_result(js, "liar")).bot == "b1"


async def test_a_waiter_cancelled_as_it_is_handed_the_lead_hands_it_on(js):
    """Given results queued behind a commit in flight, when the first waiter is cancelled just as the
    round ends and hands it the lead, then the next waiter leads instead and its result is stored."""
    committer = Committer(AsyncPublisher(js, get_logger("test")), min_batch=2, adaptive=False)
    outcomes: dict[str, Exception | None] = {}
    scope_b = anyio.CancelScope()

    async def commit(job_id: str) -> None:
        outcomes[job_id] = await committer.commit(result_subject(job_id, "b1"), _result(job_id), result_fence(job_id))

    async def lead_then_cancel_b() -> None:
        await commit("lead-a")  # returns once its round is answered and B has been handed the lead
        scope_b.cancel()

    async def b() -> None:
        with scope_b:
            await commit("lead-b")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lead_then_cancel_b)
            await anyio.lowlevel.checkpoint()  # A leads and is in flight before B and C queue
            tg.start_soon(b)
            tg.start_soon(commit, "lead-c")
    assert outcomes["lead-a"] is None and outcomes["lead-c"] is None and "lead-b" not in outcomes
    assert (await job_result(js, "lead-c")).value == "lead-c"
    assert not committer._queue and not committer._leading


async def test_results_committed_together_share_rounds_and_each_learns_its_own_fate(js, committer):
    """Given job taken recorded by bot b2, when one caller commits 60 results together (taken among
    them) while another's result is in flight, then every result but taken is stored once, taken is
    answered as already recorded, the answers come back in the order given, and the group's results
    went out in batches rather than one by one."""
    await js.publish(result_subject("g-taken", "b2"), _result("g-taken", "b2"), headers=result_fence("g-taken"))
    ids = [f"g-{i}" for i in range(30)] + ["g-taken"] + [f"g-{i}" for i in range(30, 59)]
    answers: list[Exception | None] = []

    async def group() -> None:
        answers.extend(await committer.commit_many([(result_subject(i, "b1"), _result(i), result_fence(i)) for i in ids]))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(committer.commit, result_subject("g-lead", "b1"), _result("g-lead"), result_fence("g-lead"))
            await anyio.lowlevel.checkpoint()  # the lone result is in flight before the group queues
            tg.start_soon(group)
    assert len(answers) == len(ids)
    assert isinstance(answers[30], ResultAlreadyRecordedError)
    assert answers[:30] + answers[31:] == [None] * 59
    counts = await results_per_job(js)
    assert all(counts[i] == 1 for i in ids if i != "g-taken") and counts["g-lead"] == 1
    assert (committer.stats.singles, committer.stats.fallbacks) == (1, 1)
    assert not committer._queue and not committer._leading


async def test_a_group_cancelled_while_it_waits_leaves_the_queue_and_hands_the_lead_on(js):
    """Given a group queued behind a commit in flight, when its caller is cancelled while it waits,
    then none of its results is sent, the result queued after it is still stored, and the
    committer is left idle."""
    committer = Committer(AsyncPublisher(js, get_logger("test")), min_batch=2, adaptive=False)
    scope = anyio.CancelScope()
    outcomes: dict[str, Exception | None] = {}

    async def group() -> None:
        with scope:
            await committer.commit_many([(result_subject(i, "b1"), _result(i), result_fence(i)) for i in ("x-1", "x-2", "x-3")])

    async def lead() -> None:
        outcomes["x-lead"] = await committer.commit(result_subject("x-lead", "b1"), _result("x-lead"), result_fence("x-lead"))

    async def after() -> None:
        outcomes["x-after"] = await committer.commit(result_subject("x-after", "b1"), _result("x-after"), result_fence("x-after"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lead)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(group)
            tg.start_soon(after)
            await anyio.lowlevel.checkpoint()
            scope.cancel()
    assert outcomes == {"x-lead": None, "x-after": None}
    assert all([await job_result(js, i) is None for i in ("x-1", "x-2", "x-3")])
    assert not committer._queue and not committer._leading


async def test_a_trial_of_single_publishes_takes_a_sample_first_one_alone(js):
    """Given a learning committer whose next round is a trial of single publishes, when 40 results
    wait behind a commit in flight, then the trial publishes only ``min_batch`` of them one by one (the
    first alone, then the rest) and the next round, a batch, takes the other 36: a trial never costs a
    full round of writes. The trial's estimate is its shared wait plus each result's cost, projected
    to the rounds' size."""
    committer = Committer(AsyncPublisher(js, get_logger("test")), min_batch=4)
    committer.chooser.samples[True] = 1  # one batch measured already: the warm-up's next turn is singles
    ids = [f"t-{i}" for i in range(40)]

    async def group() -> None:
        assert await committer.commit_many([(result_subject(i, "b1"), _result(i), result_fence(i)) for i in ids]) == [None] * 40

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(committer.commit, result_subject("t-lead", "b1"), _result("t-lead"), result_fence("t-lead"))
            await anyio.lowlevel.checkpoint()
            tg.start_soon(group)
    assert (committer.stats.singles, committer.stats.batches, committer.stats.batched) == (1 + 4, 1, 36)
    assert committer.chooser.samples[False] == 1 and committer.chooser.per_result[False] is not None


def test_a_trial_is_projected_from_its_first_result_alone_and_the_rest():
    """Given batch rounds of 200, when a trial of 16 single publishes took 1 ms for its first result alone
    and 1.7 ms for the other 15, then each result costs 50 us and the shared wait 0.95 ms: at 200 results,
    (0.95 ms + 200 x 50 us) / 200 = 54.75 us a result. Its own time over its size (169 us) would have
    charged the wait to 16 results."""
    chooser = Chooser(warmup=1)
    chooser.learn(True, 200 * 100e-6, 200)
    chooser.learn_trial(0.001, 0.0017, 16)
    single = chooser.per_result[False]
    assert single is not None and abs(single - (0.00095 + 200 * 50e-6) / 200) < 1e-9
    assert chooser.prefers_batch  # 54.75 us is over half the batches' 100 us
    chooser.learn_trial(0.001, 0.0010, 16)  # the rest as quick as the first alone: results cost nothing more
    chooser.learn_trial(0.001, 0.0010, 16)
    assert not chooser.prefers_batch


async def test_a_trial_whose_first_answer_never_comes_ends_within_one_ack_timeout(js, provisioned):
    """Given a trial of single publishes on a server that has stopped answering (SIGSTOP), when its
    first result's acknowledgement never comes, then the trial gives the rest only what is left of
    one ack timeout: every result gets a transport error (retried by its caller) within about one
    timeout, not two, and the chooser learns nothing from it."""
    committer = Committer(AsyncPublisher(js, get_logger("test"), ack_timeout=0.5), min_batch=16)
    committer.chooser.samples[True] = 1  # the warm-up's next turn is a trial of single publishes
    committer._leading = True  # the 16 queue up as they would behind a round in flight
    results: list[Exception | None] = []

    async def group() -> None:
        results.extend(await committer.commit_many(
            [(result_subject(f"hang-{i}", "b1"), _result(f"hang-{i}"), result_fence(f"hang-{i}")) for i in range(16)]))

    provisioned.pause()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(group)
                await anyio.lowlevel.checkpoint()
                began = anyio.current_time()
                committer._hand_over()  # the round in flight is answered: the first waiter leads the trial
        took = anyio.current_time() - began
    finally:
        provisioned.resume()
    assert len(results) == 16 and all(isinstance(e, TransportError) for e in results), results
    assert committer.stats.singles == 16 and committer.chooser.samples[False] == 0
    assert took < 0.9, took  # one ack timeout (0.5 s) and scheduling, not two
