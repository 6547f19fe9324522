"""Sync handlers registered ``@process`` on real bots: cancel, timeout and drain stop their process for real."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from corral.core.cancel import request_cancel
from corral.core.history import job_events, job_result
from corral.core.messages import EventType, make_job
from corral.core.submit import submit
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

HANDLERS = ("--handler", "add=tests.isolated_handlers:add@process",
            "--handler", "hang=tests.isolated_handlers:hang@process")


async def _events(js, job_id, etype):
    return [e for e in await job_events(js, job_id) if e.type == etype]


async def _pids(pid_file: Path, count: int) -> list[int]:
    """The pids the handler wrote, once there are at least ``count``."""
    path = anyio.Path(pid_file)
    lines = (await path.read_text()).splitlines() if await path.exists() else []
    return [int(line) for line in lines] if len(lines) >= count else []


def _gone(pid: int) -> bool:
    """True once the process no longer exists at all (killed and reaped, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _not_running(pid: int) -> bool:
    """True once the process is dead: gone, or a zombie waiting for whoever adopted it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_an_isolated_handlers_return_value_becomes_the_result(js, provisioned, bots):
    """A sync handler registered @process runs outside the bot's process and its value is the job's result."""
    bot = bots(provisioned.url, "b1", *HANDLERS)
    job = make_job("add", {"a": 2, "b": 3})
    await submit(js, job)
    result = await eventually(lambda: job_result(js, job.id), what="the isolated job's result")
    assert result.value["sum"] == 5
    assert result.value["pid"] != bot.proc.pid


async def test_cancelling_a_running_isolated_job_kills_its_process_and_the_bot_carries_on(js, provisioned, bots, tmp_path):
    """The handler reports progress through the bot, sees the cancellation, its process disappears, the bot goes on."""
    bot = bots(provisioned.url, "b1", *HANDLERS)
    pid_file, marker = tmp_path / "pids", tmp_path / "marker"
    job = make_job("hang", {"pid_file": str(pid_file), "marker": str(marker)})
    await submit(js, job)
    await eventually(lambda: _events(js, job.id, EventType.PROGRESS), what="progress from the child process")
    [pid] = await eventually(lambda: _pids(pid_file, 1), what="the handler's pid")

    await request_cancel(js._nc, job.id, "tester@test")

    [cancelled] = await eventually(lambda: _events(js, job.id, EventType.CANCELLED), timeout=10, what="the cancelled event")
    assert (cancelled.attempt, cancelled.detail) == (1, "cancelled while running")
    await eventually(lambda: _async(_gone(pid)), timeout=5, what=f"process {pid} to be gone")
    assert marker.read_text() == "cancelled"  # the handler observed the cancellation
    assert await job_result(js, job.id) is None and bot.alive
    follow_up = make_job("add", {"a": 1, "b": 2})
    await submit(js, follow_up)
    assert (await eventually(lambda: job_result(js, follow_up.id), what="the next job")).value["sum"] == 3


async def test_a_hung_isolated_job_is_killed_at_its_timeout_retried_then_dead_lettered(js, provisioned, bots, tmp_path):
    """A handler that ignores the cancellation is SIGKILLed at each attempt's timeout; after max_attempts it is dead."""
    bots(provisioned.url, "b1", *HANDLERS, "--backoff-base", "0.1")
    pid_file = tmp_path / "pids"
    # 3 s, not 1: the child must start (a fresh interpreter) and write its pid inside the timeout, and
    # on a loaded 2-core machine an interpreter start alone can take over a second.
    job = make_job("hang", {"pid_file": str(pid_file), "stubborn": True}, timeout=3, max_attempts=2)

    await submit(js, job)

    await eventually(lambda: _events(js, job.id, EventType.DEAD), timeout=40, what="the dead-letter event")
    failures = await _events(js, job.id, EventType.FAILED)
    assert [f.attempt for f in failures] == [1, 2]
    assert all("timed out after 3.0s" in f.detail for f in failures)
    pids = await _pids(pid_file, 2)
    assert len(set(pids)) == 2  # each attempt had a fresh process: the killed one was not reused
    for pid in pids:
        assert _gone(pid), f"process {pid} outlived its attempt"


async def test_a_draining_bot_stops_an_isolated_job_and_hands_it_back(js, provisioned, bots, tmp_path):
    """SIGTERM: the running job outlasts the drain timeout, its process is stopped, the job is handed back."""
    bot = bots(provisioned.url, "b1", *HANDLERS, "--drain-timeout", "1")
    pid_file = tmp_path / "pids"
    job = make_job("hang", {"pid_file": str(pid_file)})
    await submit(js, job)
    [pid] = await eventually(lambda: _pids(pid_file, 1), what="the handler's pid")

    bot.signal(signal.SIGTERM)

    await eventually(lambda: _async(bot.proc.poll() is not None), what="the bot to exit")
    assert bot.proc.returncode == 0
    assert _gone(pid)
    assert await _events(js, job.id, EventType.HANDED_BACK)


async def test_an_isolated_handler_dies_with_its_bot_even_a_killed_one(js, provisioned, bots, tmp_path):
    """SIGKILL on the bot leaves no handler process running (Linux: the child's parent-death signal)."""
    bot = bots(provisioned.url, "b1", *HANDLERS)
    pid_file = tmp_path / "pids"
    await submit(js, make_job("hang", {"pid_file": str(pid_file)}))
    [pid] = await eventually(lambda: _pids(pid_file, 1), what="the handler's pid")

    bot.kill()

    await eventually(lambda: _async(_not_running(pid)), timeout=5, what=f"process {pid} to die with its bot")


async def _async(value):
    return value
