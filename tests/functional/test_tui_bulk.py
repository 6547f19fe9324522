"""Bulk actions from the dashboard and the CLI: preview, a frozen target set, the audit event.

Real nats-server; dead letters are stored the way the executor stores them
(:func:`corral.core.dlq.move_to_dlq`), so no bot has to fail a job first.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from corral.core.dlq import list_dead, move_to_dlq
from corral.core.history import walk
from corral.core.messages import encode, event_decoder, make_job
from corral.core.names import EVENTS_STREAM, JOBS_STREAM, job_subject, ops_events_subject
from corral.core.spawn import corral_argv
from tests.functional.test_tui import dashboard, table, until

pytestmark = pytest.mark.anyio

SIZE = (120, 40)
_seq = iter(range(1, 10_000))


async def bury(js, kind: str, reason: str = "boom") -> str:
    """Store one dead letter of ``kind``; returns its job id."""
    job = make_job(kind, {"n": 1})
    await move_to_dlq(js, data=encode(job), queue="default", job_id=job.id, reason=reason, attempts=3,
                      source_subject=job_subject("default"), source_seq=next(_seq) + 1_000_000)
    return job.id


async def bulk_audits(js) -> list:
    return [event_decoder.decode(m.data or b"") async for m in walk(js, EVENTS_STREAM, ops_events_subject("bulk"))]


async def replayed_ids(js) -> set[str]:
    from corral.core.messages import job_decoder
    return {job_decoder.decode(m.data or b"").id async for m in walk(js, JOBS_STREAM, "corral.jobs.>")}


async def test_a_bulk_replay_by_kind_acts_on_exactly_the_previewed_letters_and_is_audited(provisioned, js):
    """Given 3 dead letters of kind resize and 2 of mail, when the operator filters "resize", presses R, then clears
    the filter and a 4th resize letter arrives before confirming, then exactly the 3 previewed are replayed and audited."""
    resize = {await bury(js, "resize") for _ in range(3)}
    mail = {await bury(js, "mail") for _ in range(2)}
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: table(app, "#dlq-table").row_count == 5, what="5 dead letters listed")
        await pilot.press("slash", *"resize", "enter")
        await until(pilot, lambda: table(app, "#dlq-table").row_count == 3, what="3 matching the filter")
        await pilot.press("R")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the preview")
        preview = str(app.screen.query_one("#confirm-question").render())
        assert "Replay 3 dead letter(s)" in preview and "'resize'" in preview, preview
        assert sum(job_id in preview for job_id in resize) == 3 and not any(job_id in preview for job_id in mail)

        # While the preview is open: the filter is cleared and a new letter that would match arrives.
        dead_screen = app.screen_stack[-2]
        dead_screen.query_one("#dlq-filter").value = ""
        late = await bury(js, "resize")
        app._maybe_reload_dead(force=True)
        await until(pilot, lambda: len(app.store.dead) == 6, what="the late dead letter loaded")
        await pilot.press("y")

        await until(pilot, lambda: len(app.store.dead) == 3 and app.screen is dead_screen, timeout=20,
                    what="the replay to finish")
    left = {d.job_id for d in await list_dead(js)}
    assert left == mail | {late}
    assert await replayed_ids(js) == resize
    audits = await bulk_audits(js)
    assert len(audits) == 1 and audits[0].actor == "tester@test" and audits[0].state == "replay"
    assert "replay 3 of 3 previewed" in audits[0].detail and "'resize'" in audits[0].detail


def test_the_cli_previews_a_bulk_replay_with_dry_run_and_replays_only_that_kind_with_yes(provisioned, js_sync_dead):
    """Given dead letters of two kinds, when `corral dlq replay --kind resize --dry-run` then `--yes` run, then the
    dry run changes nothing and prints the count, and the real run replays only that kind and is audited."""
    url = provisioned.url
    dry = subprocess.run(corral_argv("dlq", "replay", "--server", url, "--kind", "resize", "--dry-run", "--json"),
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    preview = json.loads(dry.stdout)
    assert preview["count"] == 2 and preview["action"] == "replay" and len(preview["sample"]) == 2
    again = subprocess.run(corral_argv("dlq", "list", "--server", url, "--json"), capture_output=True, text=True, timeout=60)
    assert len(json.loads(again.stdout)) == 3

    real = subprocess.run(corral_argv("dlq", "replay", "--server", url, "--kind", "resize", "--yes"),
                          capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    assert "replayed 2 dead letter(s)" in real.stderr
    left = json.loads(subprocess.run(corral_argv("dlq", "list", "--server", url, "--json"),
                                     capture_output=True, text=True, timeout=60).stdout)
    assert [d["kind"] for d in left] == ["mail"]
    audits = read_audits(url)
    assert len(audits) == 1 and audits[0].state == "replay" and "replay 2 of 2 previewed, filter --kind resize" in audits[0].detail

    none = subprocess.run(corral_argv("dlq", "replay", "--server", url, "--kind", "resize", "--dry-run"),
                          capture_output=True, text=True, timeout=60)
    assert none.returncode == 3 and "no dead letter matches" in none.stderr and "Traceback" not in none.stderr


def read_audits(url: str) -> list:
    import anyio
    import nats

    async def read() -> list:
        nc = await nats.connect(url)
        try:
            return await bulk_audits(nc.jetstream())
        finally:
            await nc.close()
    return anyio.run(read)


@pytest.fixture
def js_sync_dead(provisioned):
    """Two resize and one mail dead letter, stored before the test's CLI calls."""
    import anyio

    from corral.core.connect import connect
    from corral.core.log import get_logger
    from corral.core.settings import Settings

    async def seed() -> None:
        nc = await connect(Settings(servers=(provisioned.url,)), get_logger("test"), wait=False)
        try:
            js = nc.jetstream()
            for kind in ("resize", "resize", "mail"):
                await bury(js, kind)
        finally:
            await nc.close()
    anyio.run(seed)


async def test_cancel_all_matching_jobs_cancels_exactly_the_previewed_ones_and_is_audited(provisioned, js):
    """Given 2 open resize jobs and 1 mail job, when the operator searches "resize", presses C, and a 3rd resize job
    shows up before confirming, then only the 2 previewed get a cancel request and one audit event says so."""
    import time

    from corral.core.messages import Event, EventType
    from corral.core.names import CANCEL_BUCKET, job_events_subject, kv_stream, kv_subject

    async def failed_once(kind: str) -> str:
        job = make_job(kind, {})
        event = Event(type=EventType.FAILED, ts=time.time(), job_id=job.id, kind=kind, queue="default", attempt=1, bot="b1")
        await js.publish(job_events_subject(job.id), encode(event))
        return job.id

    resize = {await failed_once("resize") for _ in range(2)}
    await failed_once("mail")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: len(app.store.jobs) == 3, what="3 open jobs seen")
        search = app.screen.query_one("#job-search")
        search.value = "resize"
        await pilot.press("C")
        await until(pilot, lambda: app.screen.query("#confirm-question"), what="the preview")
        preview = str(app.screen.query_one("#confirm-question").render())
        assert "Cancel 2 job(s)" in preview and all(j in preview for j in resize), preview
        late = await failed_once("resize")
        await until(pilot, lambda: late in app.store.jobs, what="the late job seen")
        await pilot.press("y")
        await until(pilot, lambda: any("cancel requested for 2" in str(n.message) for n in app._notifications),
                    timeout=20, what="the cancel notification")
    keys = {m.subject.rsplit(".", 1)[-1] async for m in walk(js, kv_stream(CANCEL_BUCKET), kv_subject(CANCEL_BUCKET, ">"))}
    assert keys == resize
    audits = await bulk_audits(js)
    assert len(audits) == 1 and audits[0].state == "cancel" and "cancel 2 of 2 previewed, filter 'resize'" in audits[0].detail
