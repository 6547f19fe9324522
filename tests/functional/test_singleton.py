"""Singleton jobs on a real server with real bots: at most one job per key runs at a time, fleet-wide."""

from __future__ import annotations

import itertools
import json
import os
import subprocess

import pytest

from corral.core.errors import InvalidJobError
from corral.core.history import job_events, job_result
from corral.core.lookup import queued_job
from corral.core.messages import EventType, Singleton, make_job
from corral.core.spawn import corral_argv
from corral.core.submit import submit
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


async def _all_results(js, jobs):
    results = [await job_result(js, j.id) for j in jobs]
    return results if all(results) else None


async def test_singleton_jobs_for_one_key_never_overlap_across_bots(js, provisioned, bots):
    """Given four 0.4 s jobs for one key and two bots, all four run, one at a time; another key runs beside them."""
    for name in ("s1", "s2"):
        bots(provisioned.url, name)
    jobs = [make_job("sleep", {"seconds": 0.4}, singleton=Singleton(key="report")) for _ in range(4)]
    other = make_job("sleep", {"seconds": 0.4}, singleton=Singleton(key="other"))
    for job in (*jobs, other):
        await submit(js, job)
    results = await eventually(lambda: _all_results(js, jobs), timeout=40, what="every singleton job's result")
    spans = sorted((r.started_at, r.finished_at) for r in results)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.01, f"two jobs for one key overlapped: {spans}"
    assert await eventually(lambda: job_result(js, other.id), timeout=20, what="the other key's job")
    waited = [e for j in jobs for e in await job_events(js, j.id) if e.type == EventType.THROTTLED]
    assert waited and all("singleton key report is held by" in (e.detail or "") for e in waited)


async def test_a_drop_singleton_whose_key_is_held_ends_as_dropped_without_running(js, provisioned, bots):
    """Given a running job holding a key, a second one with busy=drop is recorded dropped and never runs."""
    bots(provisioned.url, "s1")
    holder = make_job("sleep", {"seconds": 3}, singleton=Singleton(key="nightly"))
    await submit(js, holder)
    await eventually(lambda: _started(js, holder.id), timeout=20, what="the holder to start")
    dropped = make_job("sum", {"a": 1, "b": 1}, singleton=Singleton(key="nightly", busy="drop"))
    await submit(js, dropped)
    events = await eventually(lambda: _ended_with(js, dropped.id, EventType.DROPPED), timeout=20, what="the dropped event")
    assert holder.id in (events[-1].detail or "")
    assert await job_result(js, dropped.id) is None
    assert await eventually(lambda: job_result(js, holder.id), timeout=20, what="the holder's result")


async def _started(js, job_id):
    # A first delivery may write no started event: the holder's lease is the proof it runs.
    from corral.core.singleton import holder
    return (await holder(js, "nightly")).endswith(job_id)


async def _ended_with(js, job_id, etype):
    events = await job_events(js, job_id)
    return events if events and events[-1].type == etype else None


def test_a_bad_singleton_key_is_refused():
    """A key that is not a subject token, or an unknown busy mode, is refused before submitting."""
    with pytest.raises(InvalidJobError, match="singleton key"):
        make_job("sum", {}, singleton=Singleton(key="a b")).validate()
    with pytest.raises(InvalidJobError, match="queue or drop"):
        make_job("sum", {}, singleton=Singleton(key="k", busy="later")).validate()


async def test_the_cli_submits_a_singleton_and_refuses_a_bad_key(js, provisioned):
    """`corral submit --singleton K --if-busy drop` stores the key on the job; a bad key exits 2 without a traceback."""
    def corral(*args):
        return subprocess.run([*corral_argv(*args), "--server", provisioned.url], capture_output=True, text=True,
                              timeout=60, env=os.environ)
    ok = corral("submit", "sum", "a=1", "b=1", "--singleton", "k1", "--if-busy", "drop", "--json")
    assert ok.returncode == 0, ok.stderr
    waiting = await queued_job(js, json.loads(ok.stdout)["id"])
    assert waiting is not None and waiting.singleton == Singleton(key="k1", busy="drop")
    bad = corral("submit", "sum", "a=1", "b=1", "--singleton", "a.b")
    assert bad.returncode == 2 and "singleton key" in bad.stderr and "Traceback" not in bad.stderr
