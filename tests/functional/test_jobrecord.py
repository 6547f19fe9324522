"""One job's record (core/jobrecord.py): the same for `corral job` and the dashboard, read from the job's own subjects."""

from __future__ import annotations

import io
import json
import time

import anyio
import nats
import pytest
from rich.console import Console

from corral.core.dlq import move_to_dlq
from corral.core.jobrecord import read_record
from corral.core.messages import Event, EventType, encode, make_job
from corral.core.names import DLQ_STREAM, api_subject, dlq_job_subject, job_events_subject, job_subject
from corral.core.spawn import corral_argv
from corral.core.submit import submit
from corral.tui.screens.jobs import read_record as tui_read_record
from corral.tui.widgets.job_inspector import render_record
from corral.tui.workflow import read_workflow
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

OTHERS = 30  #: other jobs' dead letters the lookup must not read


async def _die(js, job, source_seq: int, reason: str) -> None:
    await js.publish(job_events_subject(job.id), encode(Event(type=EventType.DEAD, ts=time.time(), job_id=job.id, detail=reason)))
    await move_to_dlq(js, data=encode(job), queue=job.queue, job_id=job.id, reason=reason, attempts=3,
                      source_subject=job_subject(job.queue), source_seq=source_seq, bots=["b1"])


async def _twice_dead(js):
    """A job that died, was replayed (by hand) and died again, among OTHERS other dead jobs."""
    for i in range(OTHERS):
        other = make_job("fail", {"i": i})
        await move_to_dlq(js, data=encode(other), queue=other.queue, job_id=other.id, reason="other",
                          attempts=1, source_subject=job_subject(other.queue), source_seq=1000 + i)
    job = make_job("fail", {"n": 1})
    await _die(js, job, 1, "first death")
    await _die(js, job, 2, "second death")
    return job


async def test_the_cli_and_the_dashboard_show_the_same_record_of_a_job_that_died_twice(js, provisioned):
    """Given a job with two dead letters, when `corral job --json` and the dashboard read it,
    then both give the same record, with both dead letters and the job's payload."""
    job = await _twice_dead(js)
    rec = await read_record(js, job.id)
    assert [d.reason for d in rec.dead] == ["first death", "second death"]
    assert rec.job is not None and rec.job.args == {"n": 1}

    tui = await tui_read_record(js, job.id)
    assert tui == rec
    with anyio.fail_after(60):
        proc = await anyio.run_process(corral_argv("job", job.id, "--json", "--server", provisioned.url), check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == json.loads(json.dumps(rec.as_dict()))

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_record(tui))
    shown = console.file.getvalue()
    assert all(f"dead letter #{d.seq}: {d.reason}" in shown for d in rec.dead)


async def test_finding_a_jobs_dead_letters_reads_only_that_jobs_subject(js, provisioned):
    """Given many other dead letters, when a job's record is read, then every DLQ read is filtered to the job's
    own subject, and there is one read per dead letter plus the one that finds no more."""
    job = await _twice_dead(js)
    spy = await nats.connect(provisioned.url)
    requests: list[dict] = []

    async def seen(msg) -> None:
        requests.append(json.loads(msg.data or b"{}"))

    await spy.subscribe(api_subject(f"DIRECT.GET.{DLQ_STREAM}"), cb=seen)
    await spy.flush()
    try:
        rec = await read_record(js, job.id)
        await spy.flush()
    finally:
        await spy.close()
    assert len(rec.dead) == 2
    assert {r.get("next_by_subj") for r in requests} == {dlq_job_subject(job.id)}
    assert len(requests) == len(rec.dead) + 1


async def test_a_workflow_step_running_its_first_delivery_reads_as_started_as_corral_job_says(js, provisioned, bots):
    """Given a bot running a job's first delivery (no event yet), when its workflow tree is read, then the step is started."""
    bots(provisioned.url, "b1")
    job = make_job("sleep", {"seconds": 60})
    await submit(js, job)

    async def taken():
        rec = await read_record(js, job.id)
        return rec if rec.state == "active" else None
    rec = await eventually(taken, timeout=30, what="b1 to take the job")
    tree = await read_workflow(js, job.id)
    assert (rec.status, tree.job_id, tree.state) == ("started", job.id, "started")
