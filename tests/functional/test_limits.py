"""Fleet-wide limits per kind on a real server with real bots: a concurrency cap, a rate, attempts, a dead holder, the CLI."""

from __future__ import annotations

import json
import signal
import time

import msgspec
import pytest

from corral.core.cancel import request_cancel
from corral.core.dlq import list_dead
from corral.core.history import job_events, job_result, walk
from corral.core.limits import LimitDef, Limiter, list_limits, set_limit
from corral.core.messages import EventType, event_decoder, make_job
from corral.core.names import EVENTS_STREAM, ops_events_subject
from corral.core.submit import submit
from tests.conftest import eventually, wait_for
from tests.functional.test_cli import corral

pytestmark = pytest.mark.anyio


async def _types(js, job_id):
    return [e.type for e in await job_events(js, job_id)]


async def _all_results(js, jobs):
    results = [await job_result(js, j.id) for j in jobs]
    return results if all(results) else None


def _most_at_once(results) -> int:
    """The largest number of handler runs in progress at one instant (ends sort before starts)."""
    edges = sorted([(r.started_at, 1) for r in results] + [(r.finished_at, -1) for r in results])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


async def _slots_held(js, kind):
    rows = [r for r in await list_limits(js) if r.kind == kind]
    return rows[0].slots_held if rows else 0


async def test_a_concurrency_cap_holds_across_two_bots(js, provisioned, bots):
    """Cap 2 on sleep, two bots with 4 slots each: never more than 2 handlers at once, and all 8 jobs finish."""
    await set_limit(js, "sleep", LimitDef(concurrency=2))
    bots(provisioned.url, "b1", "--concurrency", "4")
    bots(provisioned.url, "b2", "--concurrency", "4")
    jobs = [make_job("sleep", {"seconds": 0.4}) for _ in range(8)]
    for job in jobs:
        await submit(js, job)
    results = await eventually(lambda: _all_results(js, jobs), timeout=40, what="all 8 capped jobs")
    assert _most_at_once(results) == 2
    throttled = [j for j in jobs if EventType.THROTTLED in await _types(js, j.id)]
    assert throttled, "8 jobs offered to 8 free bot slots: the cap must have refused some"
    await eventually(lambda: _released(js, "sleep"), what="every slot released")


async def _released(js, kind):
    return await _slots_held(js, kind) == 0


async def test_a_rate_limit_spreads_starts_across_windows(js, provisioned, bots):
    """5 starts per 1 s window: 15 jobs take at least 3 windows, no window counts more than 5, and every start is counted once."""
    await set_limit(js, "sum", LimitDef(rate=5, per=1.0))
    counts: dict[str, int] = {}

    async def seen(msg):
        if msg.data:
            counts[msg.subject] = max(counts.get(msg.subject, 0), int(msg.data))

    sub = await js._nc.subscribe("$KV.corral_limits.rate.sum.*", cb=seen)
    bots(provisioned.url, "b1", "--concurrency", "8")
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(15)]
    for job in jobs:
        await submit(js, job)
    results = await eventually(lambda: _all_results(js, jobs), timeout=40, what="all 15 rate-limited jobs")
    await sub.unsubscribe()
    starts = sorted(r.started_at for r in results)
    assert len(counts) >= 3 and max(counts.values()) <= 5 and sum(counts.values()) == 15
    assert starts[-1] - starts[0] > 0.9  # 15 starts at 5 per window need 3 windows (less a start's few ms)


async def test_a_throttled_job_still_gets_all_its_attempts(js, provisioned, bots):
    """A fail job (max_attempts 2) throttled at least 3 times first still fails exactly twice, then is dead-lettered."""
    await set_limit(js, "fail", LimitDef(concurrency=1, lease=5))
    held = await Limiter(js).admit("fail", "tester/blocker")  # the test holds the only slot
    job = make_job("fail", {}, max_attempts=2)
    async with held.held():
        await submit(js, job)
        bots(provisioned.url, "b1", "--backoff-base", "0.1")
        await eventually(lambda: _throttled_at_least(js, job.id, 3), timeout=30, what="three throttled deliveries")
    events = await eventually(lambda: _dead_events(js, job.id), timeout=30, what="the dead letter")
    assert [e.attempt for e in events if e.type == EventType.FAILED] == [1, 2]
    assert [e.attempt for e in events if e.type == EventType.STARTED] == [1, 2]
    (dead,) = [d for d in await list_dead(js) if d.job_id == job.id]
    assert dead.attempts == 2 and dead.reason.startswith("failed 2 attempt(s)")


async def _throttled_at_least(js, job_id, n):
    return (await _types(js, job_id)).count(EventType.THROTTLED) >= n


async def _dead_events(js, job_id):
    events = await job_events(js, job_id)
    return events if any(e.type == EventType.DEAD for e in events) else None


async def test_a_slot_held_by_a_killed_bot_frees_after_its_lease(js, provisioned, bots):
    """Cap 1, the holder is SIGKILLed mid-job: the waiting job runs once the 2 s lease lapses, on the other bot."""
    await set_limit(js, "sleep", LimitDef(concurrency=1, lease=2))
    holder = bots(provisioned.url, "holder")
    long = make_job("sleep", {"seconds": 60}, max_attempts=1)
    await submit(js, long)
    # A first delivery writes no ``started``: the slot it holds shows it has begun.
    await eventually(lambda: _slots_held(js, "sleep"), what="the holder to start")
    waiter = bots(provisioned.url, "waiter")
    wait_for(waiter.ready, what="the second bot")
    short = make_job("sleep", {"seconds": 0.1})
    await submit(js, short)
    await eventually(lambda: _has(js, short.id, EventType.THROTTLED), what="the capped job to be refused")
    assert await _slots_held(js, "sleep") == 1
    holder.kill()
    killed_at = time.time()
    result = await eventually(lambda: job_result(js, short.id), timeout=30, what="the capped job after the lease")
    # The dead holder renewed every lease/3 until the kill, so its slot lapsed 1.3-2 s after it.
    assert result.bot == "waiter" and result.started_at - killed_at > 1.0
    await eventually(lambda: _has(js, long.id, EventType.DEAD), timeout=30, what="the dead bot's job dead-lettered")
    # Out of attempts, not run again: its one run was the unrecorded first delivery, counted as a death.
    assert EventType.STARTED not in await _types(js, long.id)
    (dead,) = [d for d in await list_dead(js) if d.job_id == long.id]
    assert dead.reason.startswith("attempt 2 exceeds the 1 attempt(s) allowed") and "1 earlier deliveries died" in dead.reason
    await eventually(lambda: _released(js, "sleep"), what="the slot released")


async def _has(js, job_id, etype):
    return etype in await _types(js, job_id)


async def test_a_slot_is_released_however_the_run_ends(js, provisioned, bots):
    """Timeout, cancellation and a drain's hand-back each free the slot at once, not after its 30 s lease."""
    await set_limit(js, "sleep", LimitDef(concurrency=1))
    bot = bots(provisioned.url, "b1", "--drain-timeout", "0.5")
    endings = [
        (make_job("sleep", {"seconds": 10}, timeout=0.5, max_attempts=1), None, EventType.DEAD),
        (make_job("sleep", {"seconds": 60, "step": 0.2}), lambda job: request_cancel(js._nc, job.id, "tester@test"), EventType.CANCELLED),
        (make_job("sleep", {"seconds": 60}), lambda job: _drain(bot), EventType.HANDED_BACK),
    ]
    for job, end, outcome in endings:
        await submit(js, job)
        # A first delivery writes no ``started``: its slot shows it running (or it has already timed out).
        await eventually(lambda job=job, outcome=outcome: _running_or_ended(js, job.id, outcome), what=f"{job.id} to start")
        if end is not None:
            await end(job)
        await eventually(lambda job=job, outcome=outcome: _has(js, job.id, outcome), what=f"{job.id} to end {outcome}")
        await eventually(lambda: _released(js, "sleep"), timeout=3, what=f"the slot released after {outcome}")


async def _running_or_ended(js, job_id, outcome):
    return await _slots_held(js, "sleep") == 1 or await _has(js, job_id, outcome)


async def _drain(bot):
    bot.signal(signal.SIGTERM)
    assert bot.wait() == 0


def test_limit_set_list_and_rm_from_the_cli(provisioned):
    """set shows the definition, list shows usage, rm removes it; both changes are recorded as operator events."""
    url = provisioned.url
    out = corral("limit", "set", "sleep", "--concurrency", "2", "--rate", "10/1m", "--json", url=url)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert (row["kind"], row["concurrency"], row["rate"], row["per"], row["lease"]) == ("sleep", 2, 10, 60.0, 30.0)
    listed = json.loads(corral("limit", "list", "--json", url=url).stdout)
    assert [(r["kind"], r["slots_held"], r["window_count"]) for r in listed] == [("sleep", 0, 0)]
    assert "10/1m" in corral("limit", "list", url=url).stdout
    assert corral("limit", "rm", "sleep", url=url).returncode == 0
    assert json.loads(corral("limit", "list", "--json", url=url).stdout) == []
    ops = wait_for(lambda: _ops(url), what="the operator events")
    assert any("set limit on kind sleep: concurrency 2, rate 10/1m" in d for d in ops)
    assert any("removed the limit on kind sleep" in d for d in ops)


def _ops(url) -> list[str]:
    import anyio
    import nats

    async def read():
        nc = await nats.connect(url)
        details = [msgspec.structs.asdict(event_decoder.decode(m.data or b"")).get("detail") or ""
                   async for m in walk(nc.jetstream(), EVENTS_STREAM, ops_events_subject("limit"))]
        await nc.close()
        return details

    return anyio.run(read)


@pytest.mark.parametrize(("args", "message"), [
    (("set", "sleep", "--rate", "abc"), "is not N/PERIOD"),
    (("set", "sleep", "--concurrency", "0"), "must be at least 1"),
    (("set", "a.b", "--concurrency", "1"), "A-Z a-z 0-9 _ -"),
    (("set", "sleep"), "needs --concurrency N and/or --rate"),
])
def test_bad_limit_input_is_refused_with_exit_2(args, message):
    """A bad rate, a zero cap, a kind that cannot be a subject token, or no limit at all: exit 2 and why."""
    out = corral("limit", *args, url="nats://127.0.0.1:1")  # refused before connecting
    assert out.returncode == 2 and message in out.stderr


def test_removing_a_limit_that_is_not_set_says_so(provisioned):
    """rm of a kind without limits exits 3 (not found, docs/cli.md) naming the kind."""
    out = corral("limit", "rm", "nothing", url=provisioned.url)
    assert out.returncode == 3 and "no limit is set for kind 'nothing'" in out.stderr


async def test_a_bot_waits_for_a_missing_limits_bucket_instead_of_throttling_everything(nats_server, bots):
    """An upgrade that skipped `corral provision`: the bot waits at start-up, naming the bucket, then
    runs jobs once it exists (limits fail closed, so running without the bucket would throttle all)."""
    import nats

    from corral.streams import load_declarations
    from corral.streams.provision import provision
    from tests.conftest import FAST

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    decls = [d.with_config(**FAST) if d.kind == "consumer" else d for d in load_declarations()]
    await provision(nc, [d for d in decls if d.name != "KV_corral_limits"])
    bot = bots(nats_server.url, "early")
    job = make_job("sum", {"a": 2, "b": 2})
    await submit(js, job)
    wait_for(lambda: "resources.waiting" in bot.log() and "KV_corral_limits" in bot.log(), what="the bot waiting for the bucket")
    assert not bot.ready()
    await provision(nc, [d for d in decls if d.name == "KV_corral_limits"])
    assert (await eventually(lambda: job_result(js, job.id), timeout=30, what="the job's result")).value == 4
    assert EventType.THROTTLED not in await _types(js, job.id)
    await nc.close()
