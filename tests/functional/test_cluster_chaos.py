"""`corral chaos --cluster` in CI: every cluster fault injected during one run, every job accounted for once."""

from __future__ import annotations

import pytest

from corral.core.log import get_logger
from corral.harness.cluster_chaos import CLUSTER_FAULTS, ClusterChaosConfig, run_cluster_chaos

pytestmark = [pytest.mark.anyio, pytest.mark.cluster_chaos]


@pytest.mark.timeout(240)
async def test_no_job_is_lost_or_duplicated_through_leader_kills_a_cut_node_and_bot_faults(tmp_path):
    """Given an R3 cluster and four proxied bots, when both stream leaders are killed, a node is cut
    off and bots are killed and frozen, then every job has exactly one outcome."""
    # A 1 s ack deadline, not `corral chaos`'s 3 s: the cut node and the frozen bot are held past one,
    # and a killed bot's jobs come back after one. The node kills' elections are the server's own.
    config = ClusterChaosConfig(jobs=400, failing=20, seed=11, ack_wait=1.0)
    report = await run_cluster_chaos(config, get_logger("chaos"), home=tmp_path)
    print("\n" + "\n".join(f"{f.fault}: target {f.target}, recovery {f.recovery_s}s, leader {f.leader_s}s, "
                           f"rejoined {f.rejoined_s}s, in flight {f.held}" for f in report.faults))
    assert [f.fault for f in report.faults] == list(CLUSTER_FAULTS)
    assert all(f.recovery_s is not None and f.held > 0 for f in report.faults)
    leader_kills = [f for f in report.faults if f.fault.startswith("kill_") and "leader" in f.fault]
    assert all(f.leader_s is not None and f.rejoined_s is not None for f in leader_kills)
    assert report.lost == [] and report.duplicated == [] and report.unexpected == []
    assert report.completed == report.submitted - report.expected_dead and report.dead == report.expected_dead == 20
