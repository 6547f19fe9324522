"""The chaos suite in CI: every fault injected, every job accounted for exactly once."""

from __future__ import annotations

import pytest

from corral.harness.chaos import FAULTS, ChaosConfig, run_chaos
from corral.core.log import get_logger

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(300)  # the poison job alone needs five deliveries, one ack deadline apart
async def test_no_job_is_lost_or_duplicated_through_kills_restarts_freezes_cuts_poison_and_garbage(tmp_path):
    """Given bots SIGKILLed, the server killed and frozen, a bot cut off, a poison job and garbage, every job has one outcome."""
    report = await run_chaos(ChaosConfig(jobs=60, failing=5, bots=3, seed=7), get_logger("chaos"), home=tmp_path)
    assert [f.fault for f in report.faults] == list(FAULTS)
    assert all(f.recovery_s is not None and f.recovery_s > 0 for f in report.faults)
    assert report.lost == [] and report.duplicated == [] and report.unexpected == []
    assert report.completed == report.submitted - report.expected_dead and report.dead == report.expected_dead == 5 + 1
    assert report.garbage == report.garbage_dead == 3
