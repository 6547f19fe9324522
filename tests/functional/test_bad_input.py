"""Bad input through a live bot: garbage, truncation, unknown kinds, oversize. No bot crashes, nothing lost."""

from __future__ import annotations

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.core.dlq import list_dead
from corral.core.errors import InvalidJobError
from corral.core.history import job_result
from corral.core.messages import encode, make_job
from corral.core.names import job_subject
from corral.core.submit import submit
from tests.conftest import eventually, provision_sync, wait_for

pytestmark = pytest.mark.anyio


async def test_garbage_truncated_and_unknown_kind_jobs_end_in_the_dlq_and_the_bot_survives(js, provisioned, bots):
    """Each bad delivery gets a dead letter with a reason; good work submitted afterwards still completes."""
    bot = bots(provisioned.url, "b1", "--backoff-base", "0.1")
    whole = encode(make_job("sum", {"a": 1, "b": 2}))
    bad = [b"", b"{", whole[: len(whole) // 2], b'{"id": 5, "kind": "sum"}', b'{"id": "x y", "kind": "sum"}', b"\xff" * 100]
    for payload in bad:
        await js.publish(job_subject("default"), payload)
    unknown = make_job("no-such-kind", {}, max_attempts=2)
    await submit(js, unknown)
    dead = await eventually(lambda: _at_least(js, len(bad) + 1), timeout=30, what="every bad job dead-lettered")
    reasons = {d.data: d.reason for d in dead}
    assert all(reasons[p].startswith("invalid payload") for p in bad)
    assert "no handler for kind 'no-such-kind'" in next(d.reason for d in dead if d.job_id == unknown.id)
    good = make_job("sum", {"a": 2, "b": 3})
    await submit(js, good)
    assert (await eventually(lambda: job_result(js, good.id), what="good work after the garbage")).value == 5
    assert bot.proc.poll() is None


async def test_a_kind_only_another_bot_serves_reaches_it_without_spending_attempts(js, provisioned, bots):
    """Given a built-in-only bot and a bot with the app's handler, when 6 app jobs with one attempt run, then all succeed."""
    plain = bots(provisioned.url, "plain")
    app = bots(provisioned.url, "app", "--handler", "add2=tests.isolated_handlers:async_add")
    await eventually(lambda: _both_live(js), what="both bots live")
    jobs = [make_job("add2", {"a": i, "b": i}, max_attempts=1) for i in range(6)]
    for job in jobs:
        await submit(js, job)
    for job in jobs:
        result = await eventually(lambda job=job: job_result(js, job.id), timeout=30, what=f"the result of {job.id}")
        assert result.value == job.args["a"] * 2 and result.bot == "app"
    assert await list_dead(js) == []
    assert plain.proc.poll() is None and app.proc.poll() is None


async def _both_live(js):
    from corral.core.status import live_bots

    return {b.name for b in await live_bots(js)} >= {"plain", "app"}


async def _at_least(js, n):
    dead = await list_dead(js)
    return dead if len(dead) >= n else None


async def test_an_oversized_job_is_refused_at_submit_with_what_to_do(js):
    """A job over the server's max_payload is refused before anything is stored, with advice."""
    with pytest.raises(InvalidJobError, match="pass a reference to large data"):
        await submit(js, make_job("echo", {"blob": "x" * (2 * 1024 * 1024)}))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=512), min_size=5, max_size=15))
def test_fuzzed_payloads_through_a_live_bot_are_all_accounted_for(tmp_path_factory, payloads):
    """Random bytes on the jobs subject: each one is dead-lettered or run; the bot keeps running."""
    import anyio

    from corral.harness.procs import BotProcess
    from corral.harness.server import EmbeddedServer

    home = tmp_path_factory.mktemp("fuzz")
    server = EmbeddedServer(home).start()
    bot = None
    try:
        provision_sync(server.url)
        bot = BotProcess(server.url, "fuzz", home)
        wait_for(bot.ready, what="bot ready")

        async def go() -> int:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            for p in payloads:
                await js.publish(job_subject("default"), p)
            dead = await eventually(lambda: _at_least(js, len(payloads)), timeout=30, what="all fuzzed payloads handled")
            await nc.close()
            return len(dead)

        assert anyio.run(go) == len(payloads)
        assert bot.proc.poll() is None
    finally:
        if bot:
            bot.close()
        server.kill()
