"""Fairness keys on a real server with real bots: a flood does not starve, weights, a dispatcher failover, a cap, the CLI."""

from __future__ import annotations

import json

import pytest

from corral.bots.dispatcher import DISPATCH_KEY
from corral.core import fairness, leases
from corral.core.history import job_result
from corral.core.messages import make_job
from corral.core.names import FAIR_STREAM, JOBS_STREAM, LOCKS_BUCKET, RESULTS_STREAM
from corral.core.submit import submit, submit_many
from tests.conftest import eventually
from tests.functional.test_cli import corral

pytestmark = pytest.mark.anyio


async def _results(js, jobs):
    results = [await job_result(js, j.id) for j in jobs]
    return results if all(results) else None


def _jobs(key: str, n: int, seconds: float = 0.0):
    return [make_job("sleep", {"seconds": seconds}, fairness_key=key) for _ in range(n)]


async def _dispatcher(js) -> str | None:
    msg = await leases.read(js, LOCKS_BUCKET, DISPATCH_KEY)
    return None if msg is None or leases.is_gone(msg) else json.loads(msg.data or b"{}")["owner"]


def _most_at_once(results) -> int:
    edges = sorted([(r.started_at, 1) for r in results] + [(r.finished_at, -1) for r in results])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


async def test_a_flood_from_one_key_does_not_keep_a_later_key_waiting_behind_it(js, provisioned, bots):
    """Given 300 jobs from A on the way, when B submits 5, then all of B's start while A still has jobs that have not started."""
    flood = _jobs("A", 300, 0.02)
    assert (await submit_many(js, flood)).ok
    bots(provisioned.url, "b1", "--concurrency", "4")
    await eventually(lambda: _started_any(js, flood), timeout=40, what="A's flood to start")
    late = _jobs("B", 5, 0.02)
    for job in late:
        await submit(js, job)
    b_results = await eventually(lambda: _results(js, late), timeout=60, what="B's 5 jobs")
    last_b = max(r.started_at for r in b_results)
    a_results = await eventually(lambda: _results(js, flood), timeout=120, what="A's flood to drain")
    assert sum(r.started_at > last_b for r in a_results) > 100, "B waited for most of A's flood"


async def _started_any(js, jobs):
    return any([await job_result(js, j.id) for j in jobs[:5]])


async def test_weights_three_to_one_give_about_three_starts_to_one_while_both_are_backlogged(js, provisioned, bots):
    """Given weight 3 for A and 1 for B and 200 jobs each, when one bot runs them, then A has about 3/4 of the first 120 starts."""
    await fairness.configure(js, "A", weight=3)
    a, b = _jobs("A", 200), _jobs("B", 200)
    assert (await submit_many(js, a)).ok and (await submit_many(js, b)).ok
    bots(provisioned.url, "b1", "--concurrency", "4")
    results = await eventually(lambda: _results(js, a + b), timeout=120, what="400 weighted jobs")
    first = sorted(results, key=lambda r: r.started_at)[:120]
    share = sum(r.job.fairness_key == "A" for r in first) / len(first)
    assert 0.62 <= share <= 0.88, f"A's share of the first 120 starts was {share:.2f}, not about 0.75"


async def test_a_dispatcher_killed_mid_run_loses_and_doubles_nothing_and_another_bot_takes_over(js, provisioned, bots):
    """Given b1 dispatching 400 fair jobs, when b1 is killed mid-run, then b2 takes the lease and every job lands once and runs."""
    b1 = bots(provisioned.url, "b1", "--concurrency", "2")
    await eventually(lambda: _is(js, "b1"), timeout=30, what="b1 to hold the dispatch lease")
    bots(provisioned.url, "b2", "--concurrency", "2")
    jobs = _jobs("A", 200, 0.01) + _jobs("B", 200, 0.01)
    assert (await submit_many(js, jobs)).ok
    await eventually(lambda: _done_at_least(js, jobs, 40), timeout=60, what="40 jobs done before the kill")
    b1.kill()
    await eventually(lambda: _is(js, "b2"), timeout=40, what="b2 to take the dispatch lease")
    await eventually(lambda: _results(js, jobs), timeout=120, what="every job's result")
    stored = (await js.stream_info(JOBS_STREAM)).state.last_seq
    assert stored == len(jobs), f"{stored} jobs reached the jobs stream for {len(jobs)} submitted: a re-move was not deduplicated"
    assert (await js.stream_info(RESULTS_STREAM)).state.messages == len(jobs)
    assert (await js.stream_info(FAIR_STREAM)).state.messages == 0


async def _is(js, owner: str) -> bool:
    return await _dispatcher(js) == owner


async def _done_at_least(js, jobs, n: int) -> bool:
    return sum([await job_result(js, j.id) is not None for j in jobs[: n * 3]]) >= n


async def test_a_per_key_cap_holds_across_two_bots_while_other_keys_run(js, provisioned, bots):
    """Given cap 2 on A and two bots with 4 slots each, when A and B submit 8 jobs each, then never more than 2 of A run at once."""
    await fairness.configure(js, "A", cap=2)
    a, b = _jobs("A", 8, 0.4), _jobs("B", 8, 0.4)
    assert (await submit_many(js, a)).ok and (await submit_many(js, b)).ok
    bots(provisioned.url, "b1", "--concurrency", "4")
    bots(provisioned.url, "b2", "--concurrency", "4")
    a_results = await eventually(lambda: _results(js, a), timeout=60, what="A's 8 capped jobs")
    b_results = await eventually(lambda: _results(js, b), timeout=60, what="B's 8 jobs")
    assert _most_at_once(a_results) == 2
    assert _most_at_once(b_results) > 2, "B has no cap: it should use the free slots"


async def test_fair_status_shows_waiting_counts_weights_and_caps(js, provisioned):
    """Given 3 waiting jobs for A, weight 2 and cap 5 set by the CLI, when `corral fair status --json` runs, then it shows them."""
    assert (await submit_many(js, _jobs("A", 3))).ok
    assert corral("fair", "weight", "A", "2", url=provisioned.url).returncode == 0
    assert corral("fair", "cap", "A", "5", url=provisioned.url).returncode == 0
    out = corral("fair", "status", "--json", url=provisioned.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"key": "A", "waiting": 3, "running": 0, "weight": 2, "cap": 5}]
    sub = corral("submit", "sum", "a=1", "b=2", "--fair", "B", url=provisioned.url)
    assert sub.returncode == 0, sub.stderr
    assert "B" in corral("fair", "status", url=provisioned.url).stdout
    shown = corral("job", sub.stdout.strip(), url=provisioned.url)
    assert "pending on corral.fair.default.normal.B" in shown.stdout + shown.stderr, shown


async def test_a_fair_job_keeps_its_trace_context_through_the_dispatcher(js, provisioned, bots):
    """Given a fair job submitted under a traceparent, when a bot runs it after the move, then its result carries that trace id."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    job = _jobs("A", 1)[0]
    await submit(js, job, traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    bots(provisioned.url, "b1")
    (result,) = await eventually(lambda: _results(js, [job]), timeout=40, what="the fair job's result")
    assert result.trace_id == trace_id


@pytest.mark.parametrize("argv, message", [
    (("fair", "weight", "a.b", "2"), "fairness key 'a.b' is not usable"),
    (("fair", "weight", "A", "0"), "weight 0 must be 1-1000"),
    (("fair", "weight", "A", "many"), "is not a whole number"),
    (("fair", "cap", "A", "-1"), "cap -1 must be 1-1000"),
    (("submit", "sum", "--fair", "no spaces"), "fairness key 'no spaces' is not usable"),
])
def test_a_bad_fairness_key_or_weight_exits_2_with_a_clear_message(argv, message):
    """Given a bad key, weight or cap, when the command runs, then it exits 2 naming the problem, before connecting."""
    out = corral(*argv, url="nats://127.0.0.1:1")
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


async def test_the_dashboard_features_screen_names_the_keys_with_the_most_jobs_waiting(js, provisioned):
    """Given 3 jobs waiting for A and 1 for B and no bots, when the features screen is open, then its status line shows both counts."""
    from tests.functional.test_tui import SIZE, dashboard, until
    from tests.functional.test_tui_features import open_features, text_of

    assert (await submit_many(js, _jobs("A", 3) + _jobs("B", 1))).ok
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await open_features(pilot, app)
        await until(pilot, lambda: "fair waiting: A 3 · B 1" in text_of(app, "#features-status"), what="the fair line")
