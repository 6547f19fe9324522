"""Real messages from a real server, bots, supervisor and ledger, checked against docs/schema/*.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.errors
import nats.js.errors
import pytest

from corral import contract
from corral.core.fleet import FLEET_STREAM, supervisor_key, write_desired
from corral.core.names import fleet_key_subject as key_subject
from corral.core.nats_client import open_client
from corral.core import locks, schedules
from corral.core.cancel import request_cancel
from corral.core.control import drain_bot
from corral.core.groups import make_group
from corral.core.history import result_message, walk
from corral.core.limits import LimitDef, set_limit
from corral.core.messages import Job, make_job
from corral.core.names import BOTS_STREAM, DLQ_STREAM, EVENTS_STREAM, JOBS_STREAM, bot_key_subject
from corral.core.submit import submit
from corral.core.names import LEDGER_QUERY_SUBJECT as QUERY_SUBJECT
from tests.conftest import eventually
from tests.functional.test_fleet import FleetProcess
from tests.functional.test_ledger import ledgers  # noqa: F401 - the fixture
from tests.schemas import problems

pytestmark = pytest.mark.anyio


class Captured:
    """Real messages by schema name, with where each came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str]] = []

    def add(self, schema: str, data: bytes | dict | None, where: str) -> None:
        self.items.append((schema, json.loads(data) if isinstance(data, bytes) else data, where))

    def mismatches(self) -> list[str]:
        return [f"{where} vs {name}.json: {p}" for name, value, where in self.items for p in problems(name, value)]

    def names(self) -> set[str]:
        return {name for name, _, _ in self.items}


async def last(js, stream: str, subject: str):
    try:
        return await js.get_msg(stream, subject=subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None


def kv_value(js, stream: str, subject: str):
    """A check for :func:`eventually`: the last message on ``subject`` (wildcards allowed) that holds a value."""
    async def check():
        found = None
        async for msg in walk(js, stream, subject):
            found = msg if msg.data else found
        return found
    return check


async def submit_workload(js) -> dict[str, Job]:
    """One job of every shape the captures need; returns them by role."""
    jobs = {
        "ok": make_job("sum", {"a": 1, "b": 2}),
        "dead": make_job("fail", {"message": "contract test"}, max_attempts=1),
        "slow": make_job("sleep", {"seconds": 3}),
        # no bot serves queue "nobody": the job stays on the stream and its unique key stays held
        "waiting": make_job("sum", {"a": 1, "b": 1}, queue="nobody", unique_key="contract-unique"),
    }
    member = make_job("sum", {"a": 2, "b": 2})
    jobs["member"] = make_group([member], Job(kind="echo"), group="contract-group")[0]
    for job in jobs.values():
        await submit(js, job)
    return jobs


async def capture_jobs_results_events(js, jobs: dict[str, Job], seen: Captured) -> None:
    waiting = await eventually(lambda: last(js, JOBS_STREAM, "corral.jobs.nobody.normal"), what="the waiting job")
    seen.add("job", waiting.data, "a job on corral.jobs.nobody.normal")
    seen.add("job-headers", dict(waiting.headers or {}), "its headers")
    result = await eventually(lambda: result_message(js, jobs["ok"].id), what="the sum job's result")
    seen.add("result", result.data, "a result")
    letter = await eventually(lambda: last(js, DLQ_STREAM, f"corral.dlq.default.{jobs['dead'].id}"), what="the dead letter")
    seen.add("dead-letter-headers", dict(letter.headers or {}), "a dead letter's headers")
    seen.add("job", letter.data, "a dead letter's body")
    await eventually(lambda: result_message(js, jobs["slow"].id), timeout=30, what="the sleep job's result")
    async for msg in walk(js, EVENTS_STREAM, "corral.events.>"):
        seen.add("event", msg.data, f"an event on {msg.subject}")


async def capture_kv(js, nc, jobs: dict[str, Job], seen: Captured) -> None:
    heartbeat = await eventually(kv_value(js, BOTS_STREAM, bot_key_subject("b1")), what="b1's heartbeat")
    seen.add("heartbeat", heartbeat.data, "$KV.corral_bots.b1")
    for key in ("def.sleep", "rate.sleep.>"):
        msg = await eventually(kv_value(js, "KV_corral_limits", f"$KV.corral_limits.{key}"), what=key)
        seen.add("limit" if key.startswith("def") else "limit-rate", msg.data, msg.subject)
    unique = await eventually(kv_value(js, "KV_corral_unique", "$KV.corral_unique.>"), what="the unique key")
    seen.add("unique", unique.data, unique.subject)
    member = await eventually(kv_value(js, "KV_corral_groups", "$KV.corral_groups.contract-group.>"), timeout=30, what="the group member")
    seen.add("group-member", member.data, member.subject)
    await request_cancel(nc, "contract-cancelled", "tester@host")
    cancel = await eventually(kv_value(js, "KV_corral_cancel", "$KV.corral_cancel.contract-cancelled"), what="the cancel request")
    seen.add("cancel", cancel.data, cancel.subject)
    async with locks.lock(js, "contract-lock", owner="tester", lease=5, wait=5):
        held = await eventually(kv_value(js, "KV_corral_locks", "$KV.corral_locks.contract-lock"), what="the lock")
        seen.add("lock", held.data, held.subject)
    await schedules.add(js, "contract-nightly", make_job("echo", {"x": 1}), "@every 1h")
    schedule = await eventually(lambda: last(js, "CORRAL_SCHEDULES", "corral.schedules.defs.contract-nightly"), what="the schedule")
    seen.add("schedule-headers", dict(schedule.headers or {}), "a schedule's headers")
    seen.add("job", schedule.data, "a schedule's body")
    await schedules.remove(js, "contract-nightly")


async def capture_slot(js, seen: Captured) -> None:
    """A concurrency slot exists only while a limited job runs: submit one and catch it."""
    await submit(js, make_job("sleep", {"seconds": 3}))
    slot = await eventually(kv_value(js, "KV_corral_limits", "$KV.corral_limits.slot.sleep.>"), timeout=30, what="a held slot")
    seen.add("limit-slot", slot.data, slot.subject)


async def capture_fleet(js, url: str, tmp_path: Path, seen: Captured) -> None:
    await write_desired(js, "contracthost", 1, "tester@host")
    desired = await last(js, FLEET_STREAM, key_subject("desired.contracthost"))
    seen.add("fleet-desired", desired.data, desired.subject)
    sup = FleetProcess(url, "contracthost", tmp_path)
    try:
        async def with_slots():
            msg = await last(js, FLEET_STREAM, key_subject(supervisor_key("contracthost")))
            return msg if msg is not None and msg.data and json.loads(msg.data).get("slots") else None
        beat = await eventually(with_slots, timeout=60, what="the supervisor's heartbeat with a slot")
        seen.add("fleet-supervisor", beat.data, beat.subject)
    finally:
        await anyio.to_thread.run_sync(sup.close)


async def capture_ledger(nc, seen: Captured) -> None:
    request = {"sql": "SELECT job_id, started_at, value FROM results", "max_rows": 10}

    async def rows():
        reply = await nc.request(QUERY_SUBJECT, json.dumps(request).encode(), timeout=10)
        body = json.loads(reply.data)
        return body if not (reply.headers or {}).get("Nats-Service-Error") and body.get("rows") else None
    seen.add("ledger-query-request", request, "a ledger request")
    reply = await eventually(rows, timeout=30, interval=0.3, what="results in the ledger")
    seen.add("ledger-query-reply", reply, "a ledger reply")
    assert reply["types"][reply["columns"].index("value")] == "JSON" and isinstance(reply["rows"][0][2], str), reply
    bad = await nc.request(QUERY_SUBJECT, json.dumps({"sql": "DELETE FROM results"}).encode(), timeout=10)
    assert (bad.headers or {}).get("Nats-Service-Error-Code") == json.loads(bad.data)["code"] == "403"
    seen.add("ledger-query-error", bad.data, "a refused ledger query")


async def _answer(nc, request: bytes) -> bytes:
    """The bot's reply to a control request, asked again while a loaded machine keeps it from answering."""
    async def ask():
        try:
            return (await nc.request("corral.control.bot.b1", request, timeout=5)).data
        except nats.errors.TimeoutError:
            return None
    return await eventually(ask, timeout=40, what=f"bot b1's answer to {request!r}")


async def capture_control(nc, url: str, seen: Captured) -> None:
    """A ping, then `corral drain`'s own request, overheard on a second connection."""
    seen.add("control-request", {"action": "ping"}, "a ping")
    seen.add("control-reply", await _answer(nc, b'{"action":"ping"}'), "a ping reply")
    seen.add("control-reply", await _answer(nc, b'{"action":"dance"}'), "a refusal")
    # corral's client: stock nats-py writes flush()'s PING ahead of the queued SUB, so its PONG can
    # come back before the server has the subscription, and the request below goes unheard
    # (docs/nats-notes.md, the PING row of nats-py's known bugs).
    listener = await open_client(servers=[url])
    sub = await listener.subscribe("corral.control.bot.>")
    await listener.flush()
    seen.add("control-reply", await drain_bot(nc, "b1", "tester@host"), "a drain reply")
    seen.add("control-request", (await sub.next_msg(timeout=5)).data, "corral drain's request")
    await listener.close()


async def test_every_kind_of_real_message_matches_its_committed_schema(js, provisioned, bots, ledgers, tmp_path):  # noqa: F811
    """Given a server with a bot, a fleet supervisor and a ledger, when jobs of every shape run,
    then every captured message matches its schema."""
    nc = js._nc
    await set_limit(js, "sleep", LimitDef(concurrency=2, rate=100, per=60))
    bot = bots(provisioned.url, "b1")
    ledger = ledgers(provisioned.url, tmp_path / "ledger.duckdb")
    jobs = await submit_workload(js)
    seen = Captured()
    await capture_jobs_results_events(js, jobs, seen)
    await capture_kv(js, nc, jobs, seen)
    await capture_slot(js, seen)
    await capture_fleet(js, provisioned.url, tmp_path, seen)
    await capture_ledger(nc, seen)
    await capture_control(nc, provisioned.url, seen)
    assert not seen.mismatches(), "\n".join(seen.mismatches()) + f"\n(bot log tail: {bot.log()[-500:]!r}, ledger: {ledger.log()[-300:]!r})"
    untested = {m.name for m in contract.MESSAGES} - seen.names()
    assert not untested, f"no real message was captured for {sorted(untested)}"
