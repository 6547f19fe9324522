"""The benchmark scenarios, one module each; :data:`SCENARIOS` maps a name to its :class:`Scenario`."""

from __future__ import annotations

import importlib

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.bench.sizes import Size


@dataclass(frozen=True)
class Metric:
    """One number a scenario reports per repetition."""

    key: str
    unit: str
    label: str


@dataclass(frozen=True)
class Context:
    """What one repetition gets: the server's URL, the size, a folder for logs."""

    url: str
    size: Size
    log_dir: Path
    rep: int
    server_pid: int = 0  #: the nats-server's process, for scenarios that measure its CPU (0: not known)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[Context], Awaitable[dict[str, float]]]
    metrics: tuple[Metric, ...]
    #: Consumer fields to provision with (the tiny size shortens deadlines this way).
    consumer_overrides: Callable[[Size], dict[str, Any]] = field(default=lambda size: {})
    #: Parameters the record keeps (deadlines the targets are measured against).
    params: Callable[[Size], dict[str, Any]] = field(default=lambda size: {})


def latency_metrics(prefix: str, label: str) -> tuple[Metric, ...]:
    return tuple(Metric(f"{prefix}_p{p}_ms", "ms", f"{label} p{p}") for p in (50, 95, 99))


NAMES = ("limit", "throughput", "submit", "latency", "recovery", "footprint", "dashboard", "ledger", "compare", "fairness")


def get(name: str) -> Scenario:
    """The scenario called ``name`` (its module is imported on first use).

    Raises:
        KeyError: no such scenario.
    """
    if name not in NAMES:
        raise KeyError(f"unknown scenario {name!r}; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"corral.bench.scenarios.{name}").SCENARIO
