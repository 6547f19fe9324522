"""The local stack's long-running children: one fleet supervisor and the analytics ledger.

`corral up` and the dashboard's screenshot tool start these beside an embedded
nats-server (:mod:`corral.harness.server`) and stop them in the same order: SIGTERM,
so supervisors drain their bots and the ledger closes DuckDB, then a bounded wait.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from corral.core.spawn import spawn_corral

FLEET_HOST = "local"  #: the fleet host name `corral up` runs its bots under (local-1..N)


def start_fleet(url: str, count: int, logs: Path, *, host: str = FLEET_HOST, env: Mapping[str, str] | None = None,
                extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """One supervisor for ``host``: it keeps ``count`` bots (<host>-1..N) and replaces crashed ones.

    ``env`` is added to this process's environment (a secured run's login for the supervisor).
    """
    logs.mkdir(parents=True, exist_ok=True)
    return spawn_corral("fleet", "--server", url, "--host", host, "--count", str(count), "--log-dir", str(logs), *extra,
                        log=logs / "fleet.log", env=env)


def start_ledger(url: str, data: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """The analytics ledger: owns data/ledger.duckdb, answers `corral query`, exports Parquet to data/lake."""
    (data / "logs").mkdir(parents=True, exist_ok=True)
    return spawn_corral("ledger", "--server", url, "--db", str(data / "ledger.duckdb"), "--parquet", str(data / "lake"),
                        log=data / "logs" / "ledger.log", env=env)


def stop(proc: subprocess.Popen | None, timeout: float = 45.0) -> None:
    """SIGTERM a child (a supervisor drains its bots first) and wait ``timeout`` seconds before SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
