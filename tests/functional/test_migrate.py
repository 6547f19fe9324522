"""A store made by the previous version (work-queue CORRAL_JOBS) is migrated by `corral provision --migrate`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nats
import pytest

from corral.core.history import job_result, walk
from corral.core.messages import make_job
from corral.core.names import JOBS_STREAM, RESULTS_STREAM, RESULTS_SUBJECT
from corral.core.schedules import add, spec_at
from corral.core.spawn import corral_argv
from corral.core.submit import submit_many
from corral.core.status import live_bots
from corral.streams import Declaration, load_declarations
from corral.streams.migrate import HOLDING
from corral.streams.provision import provision
from tests.conftest import FAST, eventually

pytestmark = pytest.mark.anyio

OLD_JOBS = Path(__file__).parent.parent / "fixtures" / "stream-jobs-workqueue.json"


def corral(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([*corral_argv(*args), "--server", url], capture_output=True, text=True, timeout=120)


async def _old_store(url: str):
    """The previous version's resources: the work-queue jobs stream, everything else as shipped."""
    nc = await nats.connect(url)
    old = Declaration("stream", JOBS_STREAM, json.loads(OLD_JOBS.read_text()), OLD_JOBS)
    decls = [old if d.name == JOBS_STREAM else d.with_config(**FAST) if d.kind == "consumer" else d for d in load_declarations()]
    await provision(nc, decls)
    return nc


async def _fired(js, n: int) -> bool:
    return len([m async for m in walk(js, JOBS_STREAM, "corral.jobs.>")]) >= n


async def test_a_work_queue_store_is_refused_with_directions_and_migrated_without_losing_a_job(nats_server, bots):
    """Given an old store with 40 jobs and two schedules, provision refuses with the way out; --migrate keeps every job, each runs once."""
    from datetime import UTC, datetime, timedelta

    nc = await _old_store(nats_server.url)
    js = nc.jetstream()
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(40)]
    await submit_many(js, jobs)
    fired, later = make_job("sum", {"a": 100, "b": 1}), make_job("sum", {"a": 200, "b": 1})
    await add(js, "fired", fired, spec_at(datetime.now(UTC) + timedelta(seconds=1)))
    await eventually(lambda: _fired(js, 41), timeout=30, what="the first schedule to fire into the old stream")
    # It must fire after the migration, into the new stream: the three commands below took 1.8 s
    # here, so 10 s (9-10 once @at drops the fraction) leaves room for a loaded machine.
    await add(js, "later", later, spec_at(datetime.now(UTC) + timedelta(seconds=10)))

    refused = corral("provision", url=nats_server.url)
    assert refused.returncode == 1 and "corral provision --migrate" in refused.stderr and "Traceback" not in refused.stderr

    migrated = corral("provision", "--migrate", url=nats_server.url)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated 41 job(s)" in migrated.stderr and "Traceback" not in migrated.stderr
    info = await js.stream_info(JOBS_STREAM)
    assert info.config.retention == "limits" and info.state.messages == 41
    assert HOLDING not in [s.config.name for s in await js.streams_info()]
    assert corral("provision", url=nats_server.url).returncode == 0  # nothing left to do, nothing in conflict

    bots(nats_server.url, "b1")
    bots(nats_server.url, "b2")
    for job in [*jobs, fired, later]:
        result = await eventually(lambda job=job: job_result(js, job.id), timeout=60, what=f"the result of {job.id}")
        assert result.value == job.args["a"] + 1
    results = [m async for m in walk(js, RESULTS_STREAM, RESULTS_SUBJECT)]
    assert len(results) == len(jobs) + 2  # once each: none lost, none run twice
    await nc.close()


async def test_a_migration_is_refused_while_bots_are_live(nats_server, bots):
    """Given an old store and a live bot, --migrate changes nothing and says to stop the bots."""
    nc = await _old_store(nats_server.url)
    js = nc.jetstream()
    bots(nats_server.url, "b1")
    await eventually(lambda: live_bots(js), what="the bot to be live")
    refused = corral("provision", "--migrate", url=nats_server.url)
    assert refused.returncode == 1 and "bot(s) are live (b1)" in refused.stderr and "Traceback" not in refused.stderr
    assert (await js.stream_info(JOBS_STREAM)).config.retention == "workqueue"
    await nc.close()
