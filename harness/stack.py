"""The local stack's long-running children: one fleet supervisor and the analytics ledger.

`corral up` and the dashboard's screenshot tool start these beside an embedded
nats-server (:mod:`corral.harness.server`) and stop them in the same order: SIGTERM,
so supervisors drain their bots and the ledger closes DuckDB, then a bounded wait.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from corral.core.spawn import spawn_corral

FLEET_HOST = "local"  #: the fleet host name `corral up` runs its bots under (local-1..N)


def start_fleet(url: str, count: int, logs: Path) -> subprocess.Popen:
    """One supervisor for host ``local``: it keeps ``count`` bots (local-1..N) and replaces crashed ones."""
    logs.mkdir(parents=True, exist_ok=True)
    return spawn_corral("fleet", "--server", url, "--host", FLEET_HOST, "--count", str(count), "--log-dir", str(logs),
                        log=logs / "fleet.log")


def start_ledger(url: str, data: Path) -> subprocess.Popen:
    """The analytics ledger: owns data/ledger.duckdb, answers `corral query`, exports Parquet to data/lake."""
    return spawn_corral("ledger", "--server", url, "--db", str(data / "ledger.duckdb"), "--parquet", str(data / "lake"),
                        log=data / "logs" / "ledger.log")


def stop(proc: subprocess.Popen | None, timeout: float = 45.0) -> None:
    """SIGTERM a child (a supervisor drains its bots first) and wait ``timeout`` seconds before SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
