"""The ledger's reports count lean successes: a first delivery's result stands for its started and succeeded."""

from __future__ import annotations

import signal

import pytest

from corral.core.messages import make_job
from corral.core.submit import submit_many
from corral.ledger import ask
from corral.ledger.reports import REPORTS
from tests.conftest import eventually
from tests.functional.test_ledger import caught_up, count, ledgers  # noqa: F401 - ledgers is a fixture

pytestmark = pytest.mark.anyio


async def test_lean_successes_appear_as_started_and_succeeded_in_the_timeline_and_every_outcome_report(
        js, provisioned, bots, ledgers, tmp_path):  # noqa: F811 - the imported fixture
    """Given a default (lean) bot, when 5 jobs succeed and 1 dies, then the reports count 5 successes that no event recorded."""
    ledgers(provisioned.url, tmp_path / "ledger.duckdb")
    bot = bots(provisioned.url, "b1")
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(5)] + [make_job("fail", {}, max_attempts=1)]
    assert (await submit_many(js, jobs)).ok
    await eventually(lambda: _at_least(js, "results", 5), timeout=40, what="5 results")
    await eventually(lambda: _at_least(js, "dead_letters", 1), timeout=40, what="the dead letter")
    bot.signal(signal.SIGTERM)
    bot.wait()
    await eventually(lambda: caught_up(js), timeout=20, what="the ledger to catch up with the streams")

    raw = await ask(js._nc, "SELECT count(*) FROM events WHERE type IN ('started', 'succeeded')")
    assert raw.rows == [[0]]  # nothing but the results records the successes
    derived = await ask(js._nc, "SELECT type, bot, attempt, count(*) FROM timeline WHERE kind = 'sum' GROUP BY ALL ORDER BY 1")
    assert derived.rows == [["started", "b1", 1, 5], ["succeeded", "b1", 1, 5]]
    by_kind = await _report(js, "rates-by-kind")
    assert (by_kind["sum"]["succeeded"], by_kind["sum"]["success_pct"]) == (5, 100.0)
    assert (by_kind["fail"]["succeeded"], by_kind["fail"]["dead"]) == (0, 1)
    assert (await _report(js, "rates-by-bot"))["b1"]["succeeded"] == 5
    throughput = await ask(js._nc, REPORTS["throughput"].sql)
    assert sum(row[throughput.columns.index("succeeded")] for row in throughput.rows) == 5
    durations = await _report(js, "durations")
    assert durations["sum"]["jobs"] == 5


async def _report(js, name: str) -> dict:
    """The report's rows keyed by their first column, each a dict by column name."""
    reply = await ask(js._nc, REPORTS[name].sql)
    return {row[0]: dict(zip(reply.columns, row, strict=True)) for row in reply.rows}


async def _at_least(js, table: str, n: int) -> bool:
    return await count(js, table) >= n
