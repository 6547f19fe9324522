"""The benchmark harness at tiny size: every scenario runs once and yields a complete record.

No timing is asserted (the box is shared); only that each record carries the
keys docs/performance.md is built from, with positive numbers (lags may be 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corral.bench import TINY, run_scenario
from corral.bench.server import config_with_sync, running_server
from corral.core.errors import TransportError
from corral.ledger.reports import REPORTS

ROOT = Path(__file__).resolve().parents[2]

RECORD_KEYS = {"scenario", "size", "reps", "sync", "server_version", "server_sync_interval", "cpu_count",
               "load_avg_before", "load_avg_after", "params", "metrics", "targets"}

EXPECTED = {
    "limit": {"publish_pipelined", "drain_ack", "drain_ack_sync", "publish_to_fetch_p50_ms", "publish_to_fetch_p99_ms"},
    "throughput": {"limit_drain_ack", *(f"bots_{b}" for b in TINY.bot_counts), *(f"ratio_{b}_bots" for b in TINY.bot_counts)},
    "submit": {"raw_publish_pipelined", "submit_many", "populate_reported", "populate_wall", "ratio_submit_many",
               "ratio_populate"},
    "latency": {"limit_publish_to_fetch_p50_ms", "enqueue_to_start_p50_ms", "enqueue_to_start_p99_ms",
                "enqueue_to_result_p99_ms", "ratio_start_p50", "ratio_start_p99"},
    "recovery": {"restarted_after_kill_s", "completed_after_kill_s", "restarted_after_delivery_s",
                 "dead_shown_after_kill_s", "dead_shown_after_last_beat_s"},
    "footprint": {"idle_rss_mb", "peak_rss_mb", "after_rss_mb"},
    "dashboard": {"tui_peak_rss_mb", "tui_max_pause_ms", "tui_ready_s", "screen_visits", "bots_shown", "pending_jobs"},
    "ledger": {"drain_jobs_per_s", "ingest_rows_per_s", "max_lag_msgs", "ledger_peak_rss_mb", "fleet_peak_rss_mb",
               "bulk_ingest_rows_per_s", "report_results", *(f"report_{name}_ms" for name in REPORTS)},
    "compare": {"raw_drain", "taskiq_drain", "corral_drain", "ratio_corral_taskiq", "taskiq_enqueue", "corral_enqueue",
                "taskiq_start_p50_ms", "corral_start_p99_ms", "taskiq_rss_mb", "corral_rss_mb"},
    "fairness": {f"{mode}_{key}" for mode in ("plain", "fair")
                 for key in ("b_first_start_ms", "b_wait_p50_ms", "b_wait_p99_ms", "b_share", "a_share", "a_backlogged", "jobs_per_s")},
}

#: Lags and waits that are 0 when nothing was behind.
#: A's share of starts while B waits is 0 when A's tiny flood is drained before B's jobs are in
#: (fast bots; ``a_backlogged`` says so too).
#: CPU time is counted by the kernel in clock ticks (10 ms here): a tiny drain of 100 jobs can use
#: less than one tick of the server's CPU, or of a worker's.
MAY_BE_ZERO = {"max_lag_msgs", "lag_at_drained_msgs", "catch_up_after_drain_s", "live_after_ready_s",
               "plain_a_backlogged", "fair_a_backlogged", "plain_a_share", "fair_a_share",
               *(f"{peer}_{whose}cpu_us_per_job" for peer in ("taskiq", "corral") for whose in ("", "server_"))}


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_each_scenario_runs_at_tiny_size_and_records_positive_numbers(scenario: str, tmp_path: Path):
    """Given a tiny size, when a scenario runs once, then its record has every metric, positive."""
    # Given / When
    (record,) = run_scenario(scenario, "tiny", reps=1, sync="always", log_dir=tmp_path)
    # Then
    assert RECORD_KEYS <= record.keys()
    assert (record["scenario"], record["size"], record["sync"], record["server_sync_interval"]) == (scenario, "tiny", "always", "always")
    assert record["cpu_count"] >= 1 and record["server_version"]
    assert EXPECTED[scenario] <= record["metrics"].keys()
    for key, m in record["metrics"].items():
        assert (m["min"] >= 0 if key in MAY_BE_ZERO else m["min"] > 0) and m["min"] <= m["median"] <= m["max"], key
    assert all({"target", "value", "bound", "met"} <= v.keys() for v in record["targets"])
    if scenario == "dashboard":  # the TUI showed every bot while every job stayed pending
        assert record["metrics"]["bots_shown"]["median"] >= TINY.dash_bots
        assert record["metrics"]["pending_jobs"]["median"] >= TINY.dash_jobs
    if scenario == "ledger":  # the reports ran over at least the results asked for
        assert record["metrics"]["report_results"]["median"] >= TINY.report_results


def test_the_lazy_sync_config_changes_only_sync_interval(tmp_path: Path):
    """Given nats.conf, when a 2m copy is made, then only its sync_interval line differs."""
    # Given
    original = (ROOT / "nats.conf").read_text().splitlines()
    # When
    copy = config_with_sync(tmp_path, "2m").read_text().splitlines()
    # Then
    assert len(copy) == len(original)
    changed = [(a, b) for a, b in zip(original, copy, strict=True) if a != b]
    assert len(changed) == 1
    assert changed[0][1].strip() == 'sync_interval: "2m"'


def test_the_command_runs_both_sync_settings_and_writes_json(tmp_path: Path):
    """Given --sync both, when `python -m bench submit` runs, then the JSON holds an always and a 2m record."""
    # Given
    out = tmp_path / "bench.json"
    # When
    done = subprocess.run([sys.executable, "-m", "bench", "submit", "--size", "tiny", "--sync", "both", "--out", str(out),
                           "--logs", str(tmp_path / "logs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Then
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads(out.read_text())["records"]
    assert [(r["sync"], r["server_sync_always"]) for r in records] == [("always", True), ("2m", False)]
    assert "submit_many" in done.stdout


def test_a_bench_server_that_cannot_start_reports_why(tmp_path: Path):
    """Given a sync_interval the server refuses, the bench's server helper raises the server's own
    complaint, not an error from signalling a process that already exited."""
    with pytest.raises(TransportError, match="sync_interval"):
        with running_server("lazy", tmp_path):
            pass
