"""The chaos suite in CI: every fault injected, every job accounted for exactly once."""

from __future__ import annotations

import pytest

from corral.harness.chaos import FAULTS, ChaosConfig, run_chaos
from corral.core.log import get_logger

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(300)  # the poison job alone needs five deliveries, one ack deadline apart
async def test_no_job_is_lost_or_duplicated_through_kills_restarts_freezes_cuts_poison_and_garbage(tmp_path):
    """Given bots SIGKILLed, the server killed and frozen, a bot cut off, a poison job and garbage, every job has one outcome."""
    # A 1 s ack deadline, not `corral chaos`'s 3 s: the freeze and the cut each outlast one and the
    # poison job's deliveries come one apart, so the run's length follows it (36 s at 3 s, 22 s at 1 s).
    # Sleepers held past a third of it are kept claimed by +WPI.
    config = ChaosConfig(jobs=60, failing=5, bots=3, seed=7, ack_wait=1.0)
    report = await run_chaos(config, get_logger("chaos"), home=tmp_path)
    assert [f.fault for f in report.faults] == list(FAULTS)
    assert all(f.recovery_s is not None and f.recovery_s > 0 for f in report.faults)
    assert report.lost == [] and report.duplicated == [] and report.unexpected == []
    assert report.completed == report.submitted - report.expected_dead and report.dead == report.expected_dead == 5 + 1
    assert report.garbage == report.garbage_dead == 3
