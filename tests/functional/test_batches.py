"""Batch kinds: one handler call for many jobs, each job with its own result, retry and dead letter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral.core.dlq import dead_letters_of
from corral.core.history import job_events, job_result, results_per_job
from corral.core.messages import EventType, make_job
from corral.core.submit import submit_many
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _all_results(js, jobs):
    results = [await job_result(js, j.id) for j in jobs]
    return results if all(results) else None


async def test_a_batch_kinds_jobs_share_handler_calls_and_each_keeps_its_own_result(js, provisioned, bots, tmp_path):
    """Given a bot with a @batch:20 kind, when 50 jobs arrive, then calls carry several jobs and each job has one result of its own."""
    bots(provisioned.url, "b1", "--handler", "double=tests.batch_handlers:double@batch:20:200ms", "--concurrency", "20")
    sizes = tmp_path / "sizes"
    jobs = [make_job("double", {"n": n, "sizes": str(sizes)}) for n in range(50)]
    await submit_many(js, jobs)

    results = await eventually(lambda: _all_results(js, jobs), timeout=60, what="all 50 results")

    assert [r.value for r in results] == [2 * n for n in range(50)]
    seen = [int(s) for s in _lines(sizes)]
    assert sum(seen) == 50 and max(seen) > 1 and max(seen) <= 20
    counts = await results_per_job(js)
    assert all(counts[j.id] == 1 for j in jobs)


async def test_an_item_returned_as_an_exception_fails_only_its_own_job(js, provisioned, bots, tmp_path):
    """Given a batch where one item's result is an exception, when it runs, then only that job is retried and dead-lettered."""
    bots(provisioned.url, "b1", "--handler", "double=tests.batch_handlers:double@batch:5:300ms",
         "--concurrency", "5", "--backoff-base", "0.1")
    sizes = tmp_path / "sizes"
    jobs = [make_job("double", {"n": n, "sizes": str(sizes), "bad": n == 2}, max_attempts=2) for n in range(5)]
    await submit_many(js, jobs)

    await eventually(lambda: dead_letters_of(js, jobs[2].id), timeout=60, what="the bad job's dead letter")

    good = [j for j in jobs if j is not jobs[2]]
    assert [r.value for r in await eventually(lambda: _all_results(js, good), what="the others' results")] == [0, 2, 6, 8]
    failures = [e for e in await job_events(js, jobs[2].id) if e.type == EventType.FAILED]
    assert [f.attempt for f in failures] == [1, 2] and "bad item 2" in failures[0].detail
    assert await job_result(js, jobs[2].id) is None
    for job in good:
        assert not await dead_letters_of(js, job.id)


async def test_a_bot_killed_mid_batch_leaves_each_job_of_the_batch_ending_exactly_once(js, provisioned, bots, tmp_path):
    """Given a batch blocked in its handler, when its bot is SIGKILLed and another starts, then each job has one result and none is dead."""
    handler = ("--handler", "gate=tests.batch_handlers:gate@batch:4:5s", "--concurrency", "4")
    first = bots(provisioned.url, "b1", *handler)
    entered, release = tmp_path / "entered", tmp_path / "release"
    jobs = [make_job("gate", {"n": n, "entered": str(entered), "release": str(release)}) for n in range(4)]
    await submit_many(js, jobs)
    await eventually(lambda: _async(_lines(entered) == [f"4 {first.proc.pid}"]), timeout=30, what="the batch in its handler")

    first.kill()
    release.touch()
    bots(provisioned.url, "b2", *handler)

    results = await eventually(lambda: _all_results(js, jobs), timeout=60, what="every job's result after the kill")
    assert [r.value for r in results] == [0, 1, 2, 3]
    counts = await results_per_job(js)
    assert all(counts[j.id] == 1 for j in jobs)
    assert {r.bot for r in results} == {"b2"}
    assert [line.split()[0] for line in _lines(entered)[1:]] == ["1"] * 4  # each redelivery, a suspect, ran alone
    for job in jobs:
        assert not await dead_letters_of(js, job.id)


async def test_a_batch_handler_returning_the_wrong_number_of_results_fails_the_call(js, provisioned, bots):
    """Given a batch handler that returns one result too few, when a job runs, then it fails saying how many were due."""
    bots(provisioned.url, "b1", "--handler", "short=tests.batch_handlers:short@batch:1")
    [job] = jobs = [make_job("short", {}, max_attempts=1)]
    await submit_many(js, jobs)

    await eventually(lambda: dead_letters_of(js, job.id), timeout=30, what="the dead letter")
    [failure] = [e for e in await job_events(js, job.id) if e.type == EventType.FAILED]
    assert "must return a list of 1 results" in failure.detail


@pytest.mark.parametrize("suffix", ["@batch:0", "@batch:x", "@batch:5:soon", "@batch:5:1s:9", "@batches"])
def test_a_bad_batch_spec_exits_2_with_a_clear_error(suffix):
    """Given a malformed @batch suffix, when the bot starts, then it exits 2 naming the spec and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "corral", "bot", "--handler", f"double=tests.batch_handlers:double{suffix}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert suffix in proc.stderr and "Traceback" not in proc.stderr


async def _async(value):
    return value
