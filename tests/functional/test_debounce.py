"""Debounce on a real server with real bots: of a burst of jobs for one key, only the last runs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from corral.core import debounce
from corral.core.errors import InvalidJobError
from corral.core.history import job_events, job_result
from corral.core.messages import EventType, make_job
from corral.core.spawn import corral_argv
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


def corral(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*corral_argv(*args), "--server", url], capture_output=True, text=True, timeout=60, env=os.environ)


async def _types(js, job_id):
    return [e.type for e in await job_events(js, job_id)]


async def test_of_a_burst_for_one_key_only_the_last_job_runs_and_the_others_are_superseded(js, provisioned, bots):
    """Given three jobs for one key inside a 1 s window, the last runs once; the first two never run and say why."""
    bots(provisioned.url, "b1")
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(3)]
    answers = [await debounce.debounce(js, job, "user-42", 1.0) for job in jobs]
    assert [a.replaced for a in answers] == [None, jobs[0].id, jobs[1].id]
    result = await eventually(lambda: job_result(js, jobs[2].id), timeout=15, what="the last job's result")
    assert result.value == 3
    assert result.started_at >= answers[2].runs_at - 0.05  # the window started again with the last job
    for old, new in ((jobs[0], jobs[1]), (jobs[1], jobs[2])):
        events = await job_events(js, old.id)
        assert [e.type for e in events][-1] == EventType.SUPERSEDED
        assert new.id in (events[-1].detail or "")
        assert await job_result(js, old.id) is None
    assert EventType.DEBOUNCED in await _types(js, jobs[2].id)
    assert await debounce.waiting(js) == []  # fired and gone


async def test_debounce_keys_are_independent(js, provisioned, bots):
    """Given jobs for two keys in the same window, each key's own last job runs."""
    bots(provisioned.url, "b1")
    a = [make_job("sum", {"a": i, "b": 0}) for i in range(2)]
    b = make_job("sum", {"a": 10, "b": 0})
    await debounce.debounce(js, a[0], "tenant-a", 0.5)
    await debounce.debounce(js, b, "tenant-b", 0.5)
    await debounce.debounce(js, a[1], "tenant-a", 0.5)
    assert sorted(w.key for w in await debounce.waiting(js)) == ["tenant-a", "tenant-b"]
    assert (await eventually(lambda: job_result(js, a[1].id), timeout=15, what="tenant-a's last job")).value == 1
    assert (await eventually(lambda: job_result(js, b.id), timeout=15, what="tenant-b's job")).value == 10
    assert await job_result(js, a[0].id) is None


async def test_a_job_after_the_window_is_a_new_debounce_not_a_replacement(js, provisioned, bots):
    """Given a debounced job that already ran, a later one for the same key replaces nothing and runs too."""
    bots(provisioned.url, "b1")
    first, second = make_job("sum", {"a": 1, "b": 1}), make_job("sum", {"a": 2, "b": 2})
    await debounce.debounce(js, first, "k", 0.3)
    await eventually(lambda: job_result(js, first.id), timeout=15, what="the first job's result")
    assert (await debounce.debounce(js, second, "k", 0.3)).replaced is None
    assert (await eventually(lambda: job_result(js, second.id), timeout=15, what="the second job's result")).value == 4


async def test_a_bad_key_or_window_is_refused_before_anything_is_stored(js):
    """A key that is not a subject token, or a window outside (0, 1 day], is refused and nothing waits."""
    with pytest.raises(InvalidJobError, match="debounce key"):
        await debounce.debounce(js, make_job("sum", {}), "a.b", 1.0)
    with pytest.raises(InvalidJobError, match="window"):
        await debounce.debounce(js, make_job("sum", {}), "k", 0)
    assert await debounce.waiting(js) == []


def test_the_cli_debounces_lists_the_waiting_job_and_shows_the_superseded_one(provisioned):
    """`corral submit --debounce --key` twice: the second replaces the first; schedule list and job show it."""
    url = provisioned.url
    first = corral(url, "submit", "sum", "a=1", "b=1", "--debounce", "1m", "--key", "cli-key", "--json")
    assert first.returncode == 0, first.stderr
    second = corral(url, "submit", "sum", "a=2", "b=2", "--debounce", "1m", "--key", "cli-key", "--json")
    assert second.returncode == 0, second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert two["replaced"] == one["id"] and one["replaced"] is None
    listed = json.loads(corral(url, "schedule", "list", "--json").stdout)
    assert [(s["name"], s["args"]) for s in listed] == [("debounce:cli-key", {"a": 2, "b": 2})]
    shown = corral(url, "job", one["id"], "--json")
    assert shown.returncode == 0 and "superseded" in shown.stdout


@pytest.mark.parametrize("args, needle", [
    (("--debounce", "5s"), "--key"),
    (("--key", "k"), "--debounce"),
    (("--debounce", "soon", "--key", "k"), "not a duration"),
    (("--debounce", "5s", "--key", "bad.key"), "debounce key"),
])
def test_bad_debounce_flags_exit_2_with_a_clear_error(provisioned, args, needle):
    """A missing pair, a bad duration or a bad key exits 2 with the reason and no traceback."""
    out = corral(provisioned.url, "submit", "sum", "a=1", "b=1", *args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr
