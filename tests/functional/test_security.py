"""The secured profile (nats-secure.conf) against a real server: refusals are the server's, by name.

A permission denial reaches a nats-py caller as a plain timeout; the reason only
arrives in ``error_cb`` (docs/nats-notes.md#permission-denials-look-like-timeouts). Every refusal here is therefore asserted
twice: the call fails, *and* the server reported ``permissions violation for
publish to "<that subject>"`` (nats-py lower-cases the server's text).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from corral.core.control import drain_bot
from corral.core.dlq import list_dead
from corral.core.history import job_result, result_message
from corral.core.messages import heartbeat_decoder, make_job
from corral.core.purge import purge_once
from corral.core.errors import ErrorCode
from corral.core.names import BOTS_STREAM, DLQ_STREAM, JOBS_STREAM, RESULTS_STREAM, bot_key_subject, result_fence, result_subject
from corral.harness.server import SECURE_CONF, EmbeddedServer
from corral.core.submit import submit
from tests.conftest import FAST, eventually

pytestmark = pytest.mark.anyio


PASSWORDS = {
    "admin": "pAdminS3cret",
    "ledger": "pLedgerS3cret",
    "sys": "pSysS3cret",
    "fleet-bot": "pFleetBotS3cret",
    **{f"bot-{i}": f"pBot{i}S3cret" for i in range(1, 5)},
}
#: How long a call that the server silently refuses is given before it counts as refused.
REFUSED_WITHIN = 1.0


def _env_name(user: str) -> str:
    return f"CORRAL_{user.upper().replace('-', '_')}_PASSWORD"


class Session:
    """One authenticated connection that records what the server reported through ``error_cb``."""

    def __init__(self, nc, errors: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=REFUSED_WITHIN)
        self.errors = errors

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e]

    async def refused(self, subject: str, *, kind: str = "publish") -> str:
        """The server's violation for ``subject`` (waits briefly: -ERR can trail the caller's timeout)."""
        want = f'permissions violation for {kind} to "{subject.lower()}"'
        await eventually(lambda: _async(any(want in e for e in self.errors)), timeout=5, what=want)
        return want

    async def all_refused(self, calls: Iterable[tuple[str, Awaitable[object]]]) -> None:
        """Make every ``(subject, call)`` at once: each call times out, and the server names each subject.

        At once, because every refusal costs a full REFUSED_WITHIN wait and they do not depend on each other.
        """
        calls = list(calls)
        outcomes = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
        answered = [(s, o) for (s, _), o in zip(calls, outcomes, strict=True) if not isinstance(o, nats.errors.TimeoutError)]
        assert not answered, f"not refused (an answer, or another error, instead of a timeout): {answered}"
        for subject in dict.fromkeys(s for s, _ in calls):
            await self.refused(subject)


async def _async(value):
    return value


async def login(url: str, user: str | None, *, inbox_prefix: str | None = None, password: str | None = None) -> Session:
    errors: list[str] = []

    async def error_cb(e: Exception) -> None:
        errors.append(str(e).lower())

    options: dict[str, Any] = dict(servers=[url], error_cb=error_cb, allow_reconnect=False, connect_timeout=2)
    if user is not None:
        options.update(user=user, password=password or PASSWORDS[user])
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    return Session(await nats.connect(**options), errors)


async def provision_as_admin(url: str) -> None:
    """streams/ applied by the admin user, with the test consumer overrides (tests/conftest.FAST)."""
    from corral.streams import load_declarations
    from corral.streams.provision import provision

    admin = await login(url, "admin")
    decls = [d.with_config(**FAST) if d.kind == "consumer" else d for d in load_declarations()]
    await provision(admin.nc, decls)
    await admin.nc.close()


@pytest.fixture
async def secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A provisioned server running nats-secure.conf; passwords are in this process's environment."""
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(_env_name(user), password)
    server = EmbeddedServer(tmp_path / "nats", config=SECURE_CONF).start()
    try:
        await provision_as_admin(server.url)
        yield server
    finally:
        server.kill()


@pytest.fixture
async def admin(secure: EmbeddedServer):
    session = await login(secure.url, "admin")
    yield session
    await session.nc.close()


@pytest.fixture
async def bot1(secure: EmbeddedServer):
    session = await login(secure.url, "bot-1", inbox_prefix="_INBOX_bot-1")
    yield session
    await session.nc.close()


# -- who may connect -------------------------------------------------------------------------


async def test_an_anonymous_connection_is_refused(secure):
    """Given no credentials, the server refuses the connection with an authorization violation."""
    with pytest.raises(nats.errors.Error) as caught:
        await login(secure.url, None)
    assert "authorization violation" in str(caught.value).lower()


async def test_a_wrong_password_is_refused(secure):
    """Given bot-1's name with bot-2's password, the connection is refused."""
    with pytest.raises(nats.errors.Error) as caught:
        await login(secure.url, "bot-1", password=PASSWORDS["bot-2"])
    assert "authorization violation" in str(caught.value).lower()


# -- what a bot's credentials cannot do ------------------------------------------------------


async def test_bot_credentials_purge_consumed_jobs_and_leave_a_waiting_one(admin, bot1):
    """Given a waiting job, when bot-1 runs the ack-floor purge (its purger's call), the server allows it and the job stays."""
    await submit(admin.js, make_job("sum", {"a": 1, "b": 1}))
    assert await purge_once(bot1.nc) == 0
    assert (await admin.js.stream_info(JOBS_STREAM)).state.messages == 1


@pytest.mark.parametrize("subject", [
    f"$JS.API.STREAM.DELETE.{RESULTS_STREAM}",
    f"$JS.API.STREAM.DELETE.{BOTS_STREAM}",
    f"$JS.API.STREAM.UPDATE.{JOBS_STREAM}",
    f"$JS.API.CONSUMER.DELETE.{JOBS_STREAM}.work-default-normal",
    f"$JS.API.CONSUMER.CREATE.{JOBS_STREAM}.thief",
    f"$JS.API.STREAM.MSG.DELETE.{RESULTS_STREAM}",
    f"$JS.API.STREAM.PURGE.{DLQ_STREAM}",
])
async def test_bot_credentials_cannot_call_admin_apis(admin, bot1, subject):
    """Given bot-1, an administrative JetStream API request is refused by name and changes nothing."""
    with pytest.raises(nats.errors.TimeoutError):
        await bot1.nc.request(subject, b"{}", timeout=REFUSED_WITHIN)
    await bot1.refused(subject)
    assert (await admin.js.stream_info(RESULTS_STREAM)).config.name == RESULTS_STREAM
    assert (await admin.js.consumer_info(JOBS_STREAM, "work-default-normal")).name == "work-default-normal"


async def test_bot_credentials_cannot_overwrite_or_delete_another_bots_key(secure, admin, bot1):
    """Given bot-2's live key, bot-1 can neither overwrite it nor delete it; the entry is unchanged."""
    bot2 = await login(secure.url, "bot-2", inbox_prefix="_INBOX_bot-2")
    await bot2.js.publish(bot_key_subject("bot-2"), b"bot-2 was here", headers={"Nats-TTL": "60s"})
    before = await admin.js.get_msg(BOTS_STREAM, subject=bot_key_subject("bot-2"), direct=True)
    key = bot_key_subject("bot-2")
    await bot1.all_refused([(key, bot1.js.publish(key, b"impostor")),
                            (key, bot1.js.publish(key, b"", headers={"KV-Operation": "DEL"}))])
    after = await admin.js.get_msg(BOTS_STREAM, subject=bot_key_subject("bot-2"), direct=True)
    assert (after.seq, after.data) == (before.seq, b"bot-2 was here")
    await bot2.nc.close()


async def test_bot_credentials_cannot_submit_jobs_or_write_operator_events(bot1):
    """A bot may record outcomes, not create work or forge operator actions."""
    await bot1.all_refused((s, bot1.js.publish(s, b"{}"))
                           for s in ("corral.jobs.default.normal", "corral.events.ops.purge", "corral.events.bot.bot-2"))


async def test_bot_credentials_cannot_listen_on_another_bots_inbox_or_control_subject(bot1):
    """bot-1 cannot subscribe to bot-2's replies (its job deliveries) or its drain requests."""
    for subject in ("_INBOX_bot-2.>", "corral.control.bot.bot-2", "corral.>"):
        await bot1.nc.subscribe(subject)
        await bot1.nc.flush()
        await bot1.refused(subject, kind="subscription")


async def test_bot_credentials_may_do_what_a_bot_does(admin, bot1):
    """bot-1 may write its own key, read a result back and see the jobs stream (the positive control)."""
    ack = await bot1.js.publish(bot_key_subject("bot-1"), b"hi", headers={"Nats-TTL": "60s"})
    assert ack.stream == BOTS_STREAM
    assert (await bot1.js.stream_info(JOBS_STREAM)).config.name == JOBS_STREAM
    assert await job_result(bot1.js, "no-such-job") is None
    assert bot1.violations() == []


async def test_a_bot_may_write_only_its_own_result_subjects(secure, bot1):
    """Given bot-1's credentials, when it publishes a result under bot-2's name, then the server refuses it by
    name and stores nothing, while a result under its own name is stored."""
    forged = result_subject("j-forged", "bot-2")
    with pytest.raises(nats.errors.TimeoutError):
        await bot1.js.publish(forged, b'{"v":1}', headers=result_fence("j-forged"))
    await bot1.refused(forged)
    assert await job_result(bot1.js, "j-forged") is None
    ack = await bot1.js.publish(result_subject("j-own", "bot-1"), b'{"v":1}', headers=result_fence("j-own"))
    assert ack.stream == RESULTS_STREAM


async def test_a_second_bot_writing_a_result_for_the_same_job_is_refused(secure, bot1):
    """Given bot-1 recorded job j's result, when bot-2 publishes its own result for j, then the fence
    refuses it (10071) and bot-1's result stands."""
    bot2 = await login(secure.url, "bot-2", inbox_prefix="_INBOX_bot-2")
    await bot1.js.publish(result_subject("j", "bot-1"), b'{"by":"bot-1"}', headers=result_fence("j"))
    with pytest.raises(nats.js.errors.APIError) as caught:
        await bot2.js.publish(result_subject("j", "bot-2"), b'{"by":"bot-2"}', headers=result_fence("j"))
    assert caught.value.err_code == ErrorCode.STREAM_WRONG_LAST_SEQUENCE
    stored = await result_message(bot2.js, "j")
    assert stored.subject == result_subject("j", "bot-1") and bot2.violations() == []
    await bot2.nc.close()


# -- the ledger ------------------------------------------------------------------------------


async def test_the_ledger_reads_results_but_cannot_touch_jobs(secure, admin):
    """The ledger can direct-get and consume results; a consumer on CORRAL_JOBS or a publish is refused."""
    ledger = await login(secure.url, "ledger", inbox_prefix="_INBOX_ledger")
    await admin.js.publish(result_subject("j1", "bot-1"), b'{"v":1}', headers=result_fence("j1"))
    assert (await result_message(ledger.js, "j1")).data == b'{"v":1}'
    sub = await ledger.js.pull_subscribe("corral.results.>", stream=RESULTS_STREAM)
    assert [m.data for m in await sub.fetch(1, timeout=2)] == [b'{"v":1}']
    await ledger.all_refused((s, ledger.nc.request(s, b"{}", timeout=REFUSED_WITHIN)) for s in (
        f"$JS.API.CONSUMER.CREATE.{JOBS_STREAM}.ledger", result_subject("j2", "bot-1"), "corral.jobs.default.normal"))
    await ledger.nc.close()


# -- the fleet supervisor --------------------------------------------------------------------


async def test_supervisor_credentials_cannot_touch_bots_jobs_or_other_hosts(secure):
    """Given fleet-bot (the supervisor of host bot), a bot's key, jobs, results and another host's keys are
    refused by name, while its own supervisor key and its slots' liveness are allowed."""
    sup = await login(secure.url, "fleet-bot", inbox_prefix="_INBOX_fleet-bot")
    await sup.all_refused((s, sup.nc.request(s, b"{}", timeout=REFUSED_WITHIN)) for s in (
        bot_key_subject("bot-1"), "$KV.corral_fleet.desired.web1", "$KV.corral_fleet.supervisor.web1",
        "corral.jobs.default.normal", f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.work-default-normal",
        result_subject("j1", "bot-1"), f"$JS.API.STREAM.PURGE.{JOBS_STREAM}", "corral.events.ops.purge"))
    ack = await sup.js.publish("$KV.corral_fleet.supervisor.bot", b"{}", headers={"Nats-TTL": "60s"})
    assert ack.stream == "KV_corral_fleet"
    with pytest.raises(nats.js.errors.NotFoundError):
        await sup.js.get_msg(BOTS_STREAM, subject=bot_key_subject("bot-2"), direct=True)
    await sup.nc.close()


# -- a real bot under least privilege --------------------------------------------------------


async def test_a_bot_running_with_bot_credentials_completes_fails_heartbeats_and_drains(secure, admin, bots, monkeypatch):
    """Given bot-1 started with only its own credentials, it completes a job, dead-letters a failing one,
    heartbeats its key, drains on request, and the server reported no permission violation."""
    monkeypatch.setenv("CORRAL_NATS_USER", "bot-1")
    monkeypatch.setenv("CORRAL_NATS_PASSWORD", PASSWORDS["bot-1"])
    monkeypatch.setenv("CORRAL_NATS_INBOX_PREFIX", "_INBOX_bot-1")
    bot = bots(secure.url, "bot-1", "--backoff-base", "0.2", "--sweep-interval", "0.5")

    ok, bad = make_job("sum", {"a": 2, "b": 3}), make_job("fail", {"message": "boom"}, max_attempts=2)
    await submit(admin.js, ok)
    await submit(admin.js, bad)

    assert (await eventually(lambda: job_result(admin.js, ok.id), timeout=30, what="the result")).value == 5
    dead = await eventually(lambda: list_dead(admin.js, match=lambda d: d.job_id == bad.id), timeout=30, what="dead letter")
    assert dead[0].attempts == 2 and "boom" in dead[0].reason
    first = await admin.js.get_msg(BOTS_STREAM, subject=bot_key_subject("bot-1"), direct=True)
    assert heartbeat_decoder.decode(first.data).name == "bot-1"
    await eventually(lambda: _beat_after(admin, first.seq), timeout=10, what="a second heartbeat")

    reply = await drain_bot(admin.nc, "bot-1", actor="test")
    assert reply["ok"] is True
    assert bot.wait(30) == 0
    assert "nats.error" not in bot.log() and "permissions violation" not in bot.log().lower(), bot.log()[-3000:]


async def _beat_after(admin: Session, seq: int) -> bool:
    try:
        return (await admin.js.get_msg(BOTS_STREAM, subject=bot_key_subject("bot-1"), direct=True)).seq > seq
    except nats.js.errors.NotFoundError:
        return False
