"""Disaster recovery as the runbook says: back up, destroy the store, restore, carry on."""

from __future__ import annotations

import shutil
import subprocess

import nats
import pytest

from corral.core import schedules
from corral.core.dlq import list_dead
from corral.core.limits import LimitDef, list_limits, set_limit
from corral.core.history import job_events, job_result
from corral.core.messages import make_job
from corral.core.names import JOBS_STREAM
from corral.core.submit import submit, submit_many
from corral.core.timeline import with_result
from corral.core.spawn import corral_argv
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


def corral(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(corral_argv(*args), capture_output=True, text=True, timeout=120)


async def test_a_destroyed_store_is_restored_with_every_job_result_and_dead_letter(provisioned, bots, tmp_path):
    """Given results, a dead letter and pending jobs, after backup + wiped store + restore all are there and pending work completes."""
    url = provisioned.url
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    bot = bots(url, "b1")
    done = [make_job("sum", {"a": i, "b": i}) for i in range(20)]
    await submit_many(js, done)
    doomed = make_job("fail", {}, max_attempts=1)
    await submit(js, doomed)
    await eventually(lambda: _all_results(js, done), what="results")
    await eventually(lambda: list_dead(js), what="the dead letter")
    bot.kill()
    pending = [make_job("sum", {"a": 100, "b": i}) for i in range(5)]
    await submit_many(js, pending)
    await schedules.add(js, "nightly", make_job("sum", {"a": 1, "b": 1}), "0 0 3 * * *")
    await set_limit(js, "sleep", LimitDef(concurrency=2))

    backup_dir = tmp_path / "backup"
    out = corral("backup", str(backup_dir), "--server", url)
    assert out.returncode == 0, out.stderr

    await nc.close()
    provisioned.kill()
    shutil.rmtree(provisioned.store_dir)  # the disaster
    provisioned.start()
    out = corral("restore", str(backup_dir), "--server", url)
    assert out.returncode == 0, out.stderr

    nc = await nats.connect(url)
    js = nc.jetstream()
    assert all([await job_result(js, j.id) for j in done])
    assert [d.job_id for d in await list_dead(js)] == [doomed.id]
    restored = with_result(await job_events(js, done[0].id), await job_result(js, done[0].id))
    assert [e.type for e in restored][-1] == "succeeded"
    assert (await js.stream_info(JOBS_STREAM)).state.messages == 5
    assert [(s.name, s.spec) for s in await schedules.list_schedules(js)] == [("nightly", "0 0 3 * * *")]
    assert [(r.kind, r.limit.concurrency) for r in await list_limits(js)] == [("sleep", 2)]
    bots(url, "b2")
    assert (await eventually(lambda: _all_results(js, pending), what="pending jobs after restore"))
    await nc.close()


async def test_restore_refuses_a_deployment_that_already_holds_data(provisioned, tmp_path):
    """Restoring over live data is refused with a clear message instead of mixing histories."""
    nc = await nats.connect(provisioned.url)
    await submit(nc.jetstream(), make_job("sum", {"a": 1, "b": 1}))
    await nc.close()
    assert corral("backup", str(tmp_path / "b"), "--server", provisioned.url).returncode == 0
    out = corral("restore", str(tmp_path / "b"), "--server", provisioned.url)
    assert out.returncode == 2 and "restore into an empty deployment" in out.stderr


async def _all_results(js, jobs):
    return all([await job_result(js, j.id) for j in jobs])
