"""Provisioning, a full stream, and the reaper, against a real server."""

from __future__ import annotations


import nats
import nats.errors
import pytest

from corral.core.dlq import list_dead
from corral.core.errors import StreamFullError
from corral.core.history import job_result
from corral.core.log import get_logger
from corral.core.messages import Event, EventType, decode_job, encode, make_job
from corral.core.names import JOBS_STREAM, job_events_subject
from corral.core.submit import submit, submit_many
from corral.bots.reaper import Reaper
from corral.streams import load_declarations
from corral.streams.provision import Action, provision
from tests.conftest import NS, eventually

pytestmark = pytest.mark.anyio


async def test_provisioning_twice_changes_nothing(nats_server):
    """Given a fresh server, the first run creates everything and the second reports it unchanged."""
    nc = await nats.connect(nats_server.url)
    first = await provision(nc, load_declarations())
    second = await provision(nc, load_declarations())
    await nc.close()
    assert {r.action for r in first} == {Action.CREATED}
    assert {r.action for r in second} == {Action.UNCHANGED}
    assert {r.decl.name for r in first} >= {
        "CORRAL_JOBS", "CORRAL_RESULTS", "CORRAL_EVENTS", "CORRAL_DLQ", "KV_corral_bots", "work-default-normal",
    }


async def test_an_editable_difference_is_updated_and_a_fixed_one_is_reported(nats_server):
    """An ack_wait change is applied in place; a retention change is refused and reported as a conflict."""
    nc = await nats.connect(nats_server.url)
    decls = load_declarations()
    await provision(nc, decls)
    consumer = next(d for d in decls if d.kind == "consumer").with_config(ack_wait=7 * NS)
    jobs = next(d for d in decls if d.name == JOBS_STREAM).with_config(retention="workqueue")
    updated, conflict = await provision(nc, [consumer, jobs])
    info = await nc.jetstream().consumer_info(JOBS_STREAM, consumer.name)
    await nc.close()
    assert updated.action == Action.UPDATED and info.config.ack_wait == 7
    assert conflict.action == Action.CONFLICT and "retention" in conflict.diff and conflict.error


async def test_a_full_jobs_stream_refuses_with_a_clear_error_and_accepts_again_once_drained(nats_server, bots):
    """Given a stream capped at 5 jobs, the 6th submit is refused whole; after bots drain it, submits work again."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    decls = [d.with_config(max_msgs=5) if d.name == JOBS_STREAM else d for d in load_declarations()]
    await provision(nc, decls)
    summary = await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(8)])
    assert summary.accepted == 5 and len(summary.refused) == 3
    assert "raise the stream's max_msgs" in summary.refused[0][2]
    with pytest.raises(StreamFullError, match="Nothing was enqueued"):
        await submit(js, make_job("sum", {"a": 1, "b": 1}))
    bots(nats_server.url, "b1")
    await eventually(lambda: _stream_empty(js), what="the bot to drain the stream")
    job = make_job("sum", {"a": 1, "b": 1})
    await submit(js, job)
    assert (await eventually(lambda: job_result(js, job.id), what="a result after the drain")).value == 2
    await nc.close()


async def test_a_full_jobs_stream_inside_a_batch_refuses_exactly_the_jobs_past_its_limit_and_keeps_their_order(nats_server):
    """Given a stream capped at 50 jobs, when 300 are submitted (atomic batches of 200), then jobs 0-49 are
    stored in order and each of jobs 50-299 is reported refused by its index."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await provision(nc, [d.with_config(max_msgs=50) if d.name == JOBS_STREAM else d for d in load_declarations()])
    jobs = [make_job("sum", {"a": i, "b": 1}, id=f"full-{i}") for i in range(300)]
    summary = await submit_many(js, jobs)
    assert summary.accepted == 50 and [index for index, _, _ in summary.refused] == list(range(50, 300))
    stored = [decode_job((await js.get_msg(JOBS_STREAM, seq=seq)).data).id for seq in range(1, 51)]
    await nc.close()
    assert stored == [f"full-{i}" for i in range(50)]


async def test_a_batch_holding_an_already_submitted_job_counts_it_once_as_a_duplicate_and_stores_the_rest_in_order(js, provisioned):
    """Given jobs 0-99 submitted, when jobs 0-299 are submitted (batches of 200), then 100 are duplicates,
    the stream holds each of the 300 once, and jobs 100-299 follow in order."""
    first = await submit_many(js, [make_job("sum", {"a": i, "b": 1}, id=f"dup-{i}") for i in range(100)])
    again = await submit_many(js, [make_job("sum", {"a": i, "b": 1}, id=f"dup-{i}") for i in range(300)])
    assert (first.accepted, first.duplicates) == (100, 0)
    assert (again.accepted, again.duplicates, again.refused) == (300, 100, [])
    stored = [decode_job((await js.get_msg(JOBS_STREAM, seq=seq)).data).id for seq in range(1, 301)]
    assert stored == [f"dup-{i}" for i in range(300)]


async def _stream_empty(js):
    return (await js.stream_info(JOBS_STREAM)).state.messages == 0


async def test_the_sweep_dead_letters_a_job_the_server_gave_up_on(nats_server):
    """Given a message whose deliveries ran out while its bots died, the sweep moves it to the DLQ."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    decls = [d.with_config(max_deliver=1, ack_wait=1 * NS) if d.kind == "consumer" else d for d in load_declarations()]
    await provision(nc, decls)
    job = make_job("sum", {"a": 1, "b": 1})
    await submit(js, job)
    # A bot takes the only delivery, records its start, and dies without acking.
    sub = await js.pull_subscribe_bind(durable="work-default-normal", stream=JOBS_STREAM)
    (_msg,) = await sub.fetch(1, timeout=5)
    started = Event(type=EventType.STARTED, ts=0, job_id=job.id, attempt=1, bot="ghost", incarnation="g")
    await js.publish(job_events_subject(job.id), encode(started))
    reaper = Reaper(nc, js, get_logger("test"), interval=60)
    moved = await eventually(reaper.sweep, timeout=15, what="the sweep to find the exhausted message")
    dead = await list_dead(js)
    await nc.close()
    assert moved == 1 and dead[0].job_id == job.id and "max_deliver" in dead[0].reason


async def test_the_advisory_listener_dead_letters_an_exhausted_job(nats_server):
    """Given a listener, when the server announces max deliveries, the job moves to the DLQ at once."""
    import anyio

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    decls = [d.with_config(max_deliver=1, ack_wait=1 * NS) if d.kind == "consumer" else d for d in load_declarations()]
    await provision(nc, decls)
    reaper = Reaper(nc, js, get_logger("test"), interval=3600)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.listen)
        await eventually(lambda: _async(lambda: bool(nc._subs)), what="the listener to subscribe")
        job = make_job("sum", {"a": 1, "b": 1})
        await submit(js, job)
        sub = await js.pull_subscribe_bind(durable="work-default-normal", stream=JOBS_STREAM)
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.nak()
        # Bots keep pulling; a waiting pull is what makes the server try (and refuse) a redelivery.
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1.5)
        dead = await eventually(lambda: list_dead(js), timeout=15, what="the advisory to be handled")
        tg.cancel_scope.cancel()
    await nc.close()
    assert dead[0].job_id == job.id and "max_deliver exhausted" in dead[0].reason


async def _async(fn):
    return fn()
