"""Summaries of measured samples: percentiles within a repetition, median and range across repetitions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks.

    Raises:
        ValueError: ``samples`` is empty.
    """
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(prefix: str, seconds: Sequence[float]) -> dict[str, float]:
    """``{prefix_p50_ms, prefix_p95_ms, prefix_p99_ms}`` from samples in seconds."""
    return {f"{prefix}_p{p}_ms": percentile(seconds, p) * 1000 for p in (50, 95, 99)}


@dataclass(frozen=True)
class Spread:
    """One metric over repetitions."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def as_dict(self) -> dict[str, object]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": list(self.values)}
