"""The `corral` command as an operator types it: real subprocesses, real server."""

from __future__ import annotations

import json
import subprocess
from corral.core.spawn import corral_argv


from tests.conftest import wait_for


def corral(*args: str, url: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = corral_argv(*args)
    if url:
        cmd += ["--server", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)


def test_an_unreachable_server_gets_a_clear_error_and_exit_5():
    """No server listening: the message names the URL and what to do."""
    out = corral("status", url="nats://127.0.0.1:1")
    assert out.returncode == 5
    assert "cannot reach NATS at nats://127.0.0.1:1" in out.stderr and "CORRAL_NATS_URL" in out.stderr


def test_a_wrong_flag_is_refused_with_usage():
    """A bad number is rejected by the parser before anything connects."""
    out = corral("populate", "lots")
    assert out.returncode == 2 and "not a whole number" in out.stderr


def test_a_bad_job_id_is_refused_before_submitting(provisioned):
    """A job id that would break a subject is refused with the rule."""
    out = corral("submit", "sum", "a=1", "b=2", "--id", "a.b", url=provisioned.url)
    assert out.returncode == 2 and "A-Z a-z 0-9 _ -" in out.stderr


def test_a_bad_ndjson_line_submits_nothing_and_names_the_line(provisioned, tmp_path):
    """A malformed line in --file fails the whole file with its line number."""
    f = tmp_path / "jobs.ndjson"
    f.write_text('{"kind": "sum", "args": {"a": 1, "b": 2}}\n{"kind": 5}\n')
    out = corral("submit", "--file", str(f), url=provisioned.url)
    status = json.loads(corral("status", "--json", url=provisioned.url).stdout)
    assert out.returncode == 2 and "jobs.ndjson:2" in out.stderr and "Nothing was submitted" in out.stderr
    assert next(s for s in status["streams"] if s["name"] == "CORRAL_JOBS")["messages"] == 0


def test_submit_status_job_and_dlq_work_together(provisioned, bots):
    """Submit from a file and one by one, see them complete, inspect one, replay a dead one."""
    url = provisioned.url
    bots(url, "b1", "--backoff-base", "0.1")
    job_id = corral("submit", "sum", "a=40", "b=2", "--id", "answer", url=url).stdout.strip()
    assert job_id == "answer"
    wait_for(lambda: "result: 42" in corral("job", "answer", url=url).stdout, what="job answer's result")
    history = json.loads(corral("job", "answer", "--json", url=url).stdout)
    assert [e["type"] for e in history["events"]] == ["started", "succeeded"] and history["result"]["value"] == 42
    corral("submit", "fail", "--id", "doomed", "--max-attempts", "1", url=url)
    wait_for(lambda: json.loads(corral("dlq", "list", "--json", url=url).stdout), what="a dead letter")
    refused = corral("dlq", "replay", "--all", url=url)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    replayed = corral("dlq", "replay", "--all", "--yes", "--json", url=url)
    assert json.loads(replayed.stdout) == {"replay": 1}
    events = json.loads(corral("job", "doomed", "--json", url=url).stdout)["events"]
    assert "replayed" in [e["type"] for e in events]


def test_health_fails_when_not_provisioned_and_passes_with_a_probe_once_running(nats_server, bots):
    """health exits 1 naming what is missing, then 0 with a probe round trip through a live bot."""
    out = corral("health", url=nats_server.url)
    assert out.returncode == 1 and "missing: run `corral provision`" in out.stdout
    assert corral("provision", url=nats_server.url).returncode == 0
    bot = bots(nats_server.url, "b1")
    wait_for(bot.ready, what="bot ready")
    out = corral("health", "--probe", "--json", url=nats_server.url)
    report = json.loads(out.stdout)
    assert report["ok"] is True and out.returncode == 0
    assert any(c["check"] == "probe" and c["ok"] for c in report["checks"])


def test_resubmitting_the_same_ndjson_file_adds_no_duplicates(provisioned, tmp_path):
    """Lines without ids get stable ids, so a second submit of the file is all duplicates."""
    f = tmp_path / "jobs.ndjson"
    f.write_text("".join(f'{{"kind": "sum", "args": {{"a": {i}, "b": 1}}}}\n' for i in range(20)))
    first = json.loads(corral("submit", "--file", str(f), "--json", url=provisioned.url).stdout)
    second = json.loads(corral("submit", "--file", str(f), "--json", url=provisioned.url).stdout)
    assert (first["accepted"], first["duplicates"]) == (20, 0)
    assert (second["accepted"], second["duplicates"]) == (20, 20)


def test_pause_and_resume_are_applied_and_audited(provisioned):
    """pause stops delivery on the consumer, resume restarts it, both land in the audit trail."""
    import anyio
    import nats

    assert corral("pause", "default", url=provisioned.url).returncode == 0

    async def paused() -> tuple[bool, list[str]]:
        nc = await nats.connect(provisioned.url)
        info = await nc.jetstream()._jsm._api_request("$JS.API.CONSUMER.INFO.CORRAL_JOBS.work-default-normal", b"")
        ops = [m async for m in walk(nc.jetstream(), "CORRAL_EVENTS", "corral.events.ops.>")]
        await nc.close()
        return bool(info.get("paused")), [json.loads(m.data or b"")["detail"] for m in ops]

    from corral.core.history import walk

    is_paused, details = anyio.run(paused)
    assert is_paused and details == ["pause queue default/normal"]
    assert corral("resume", "default", url=provisioned.url).returncode == 0
    is_paused, details = anyio.run(paused)
    assert not is_paused and details[-1] == "resume queue default/normal"


def test_draining_an_unknown_bot_says_so(provisioned):
    """A drain for a bot that is not running names it and exits 3 (not found)."""
    out = corral("drain", "ghost", url=provisioned.url)
    assert out.returncode == 3 and "bot 'ghost' did not answer" in out.stderr


def test_an_unknown_job_id_says_there_is_no_record(provisioned):
    """`corral job` for an id nobody submitted exits 3 and says why it may be missing."""
    out = corral("job", "never-submitted", url=provisioned.url)
    assert out.returncode == 3 and "no record of job never-submitted" in out.stderr


def test_a_schedule_added_with_a_priority_fires_onto_that_priority(provisioned):
    """`schedule add --priority high` targets the high subject; `schedule list --json` says so."""
    added = corral("schedule", "add", "hourly-high", "sum", "a=1", "b=1", "--every", "1h", "--priority", "high", "--json",
                   url=provisioned.url)
    assert added.returncode == 0, added.stderr
    listed = json.loads(corral("schedule", "list", "--json", url=provisioned.url).stdout)
    assert [(s["name"], s["target"]) for s in listed] == [("hourly-high", "corral.schedules.fire.default.high")]
    refused = corral("schedule", "add", "x", "sum", "--every", "1h", "--priority", "urgent", url=provisioned.url)
    assert refused.returncode == 2 and "invalid choice: 'urgent'" in refused.stderr


def test_job_follow_prints_progress_live_and_returns_when_the_job_ends(provisioned, bots):
    """`corral job ID --follow --json` streams the job's events, progress included, and exits 0 when it ends.

    A first delivery records no ``started``: the result implies it, so it is printed when the result lands.
    """
    bots(provisioned.url, "b1")
    submitted = corral("submit", "sleep", "seconds=1.5", "step=0.3", "--json", url=provisioned.url)
    job_id = json.loads(submitted.stdout)["id"]
    followed = corral("job", job_id, "--follow", "--json", url=provisioned.url)
    assert followed.returncode == 0, followed.stderr
    types = [json.loads(line)["type"] for line in followed.stdout.splitlines()]
    assert types[-2:] == ["started", "succeeded"] and types.count("started") == 1 and types.count("progress") >= 2
