"""What a real bot logs per job: a summary line at info, the per-job lines only at debug."""

from __future__ import annotations

import re

import pytest

from corral.core.handlers import generate
from corral.core.spawn import spawn_corral
from corral.core.submit import raise_for, submit_many
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


def _summed(log: str, field: str) -> int:
    return sum(int(m) for m in re.findall(rf"event=bot\.summary .*?\b{field}=(\d+)", log))


async def test_a_bot_at_info_counts_finished_jobs_in_summary_lines_not_a_line_per_job(js, provisioned, bots):
    """Given a bot at the default level, when it runs 50 jobs, then its summary lines count 50 done and no job.succeeded line is written."""
    bot = bots(provisioned.url, "b1")
    raise_for(await submit_many(js, generate("sum", 50, "default")))
    await eventually(lambda: _async(_summed(bot.log(), "done") >= 50), timeout=30, what="summary lines counting 50 jobs")
    log = bot.log()
    assert _summed(log, "done") == 50
    assert "event=job.succeeded" not in log


async def test_a_bot_at_debug_writes_a_line_per_finished_job(js, provisioned, tmp_path):
    """Given a bot started with --log-level debug, when it runs 5 jobs, then it writes 5 job.succeeded lines."""
    path = tmp_path / "bot.log"
    proc = spawn_corral("--log-level", "debug", "bot", "--server", provisioned.url, "--name", "dbg", "--outbox", "none", log=path)
    try:
        raise_for(await submit_many(js, generate("sum", 5, "default")))
        await eventually(lambda: _async(path.read_text().count("event=job.succeeded") >= 5), timeout=30, what="5 job.succeeded lines")
        assert path.read_text().count("event=job.succeeded") == 5
    finally:
        proc.kill()
        proc.wait()


async def _async(value):
    return value
