"""Running a scenario: a server per fsync setting, repetitions on it, one record per setting.

A record is plain JSON: what ran (scenario, size, parameters), where (cpu
count, load average before and after, server version and its reported
``sync_interval``), and each metric's median and min-max over repetitions,
plus the issue's targets checked against the medians.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio

from corral.bench.scenarios import Context, Scenario, get
from corral.bench.server import SYNC_CHOICES, ServerInfo, provision_for_bench, running_server
from corral.bench.sizes import SIZES, Size
from corral.bench.stats import Spread
from corral.bench.targets import verdicts


async def _one(scenario: Scenario, ctx: Context) -> dict[str, float]:
    await provision_for_bench(ctx.url, **scenario.consumer_overrides(ctx.size))
    return await scenario.run(ctx)


def run_scenario(name: str, size: str | Size = "tiny", reps: int = 1, sync: str = "always",
                 log_dir: Path | None = None, progress: Callable[[str], None] = lambda line: None) -> list[dict[str, Any]]:
    """Run ``name`` ``reps`` times per fsync setting of ``sync``; one record per setting.

    Raises:
        KeyError: unknown scenario, size or sync choice.
        CorralError: a server or bot failed to start, or a run did not complete.
    """
    scenario = get(name)
    size = SIZES[size] if isinstance(size, str) else size
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"corral-bench-{name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for setting in SYNC_CHOICES[sync]:
        load_before, started, t0 = os.getloadavg(), dt.datetime.now(dt.UTC), time.monotonic()
        samples: list[dict[str, float]] = []
        with running_server(setting, log_dir) as server:
            info = ServerInfo.read(server)
            for rep in range(reps):
                progress(f"{name} sync={setting} rep {rep + 1}/{reps}")
                ctx = Context(server.url, size, log_dir / f"{setting}-rep{rep + 1}", rep, server.proc.pid if server.proc else 0)
                ctx.log_dir.mkdir(parents=True, exist_ok=True)
                samples.append(anyio.run(_one, scenario, ctx))
        records.append(_record(scenario, size, reps, setting, info, samples, load_before, started,
                               time.monotonic() - t0, log_dir))
    return records


def _record(scenario: Scenario, size: Size, reps: int, sync: str, info: ServerInfo, samples: list[dict[str, float]],
            load_before: tuple[float, ...], started: dt.datetime, seconds: float, log_dir: Path) -> dict[str, Any]:
    units = {m.key: (m.unit, m.label) for m in scenario.metrics}
    metrics = {}
    for key in samples[0]:
        unit, label = units.get(key, ("", key))
        metrics[key] = {"unit": unit, "label": label, **Spread.of([s[key] for s in samples]).as_dict()}
    record = {
        "scenario": scenario.name, "summary": scenario.summary, "size": size.name, "reps": reps, "sync": sync,
        "server_version": info.version, "server_sync_interval": info.sync_interval, "server_sync_always": info.sync_always,
        "cpu_count": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "nats_py": version("nats-py"), "platform": platform.platform(),
        "started_at": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1), "log_dir": str(log_dir),
        "params": {"size": size.as_dict(), **scenario.params(size)},
        "metrics": metrics,
    }
    record["targets"] = verdicts(record)
    return record
