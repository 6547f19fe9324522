"""The issue's targets, checked against a record's medians.

Each bound may depend on the record's parameters (the ack deadline and the
liveness TTL the run used), so the same check holds at tiny and full size.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    scenario: str
    metric: str
    text: str
    at_most: bool  #: True: value <= bound; False: value >= bound
    bound: Callable[[dict[str, Any]], float]  #: from the record's params
    #: The fsync setting the target is stated for (None: any).
    sync: str | None = None

    def check(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The verdict, or None when the record lacks the metric (e.g. no 4-bot run) or its setting."""
        metric = record["metrics"].get(self.metric)
        if metric is None or (self.sync is not None and record["sync"] != self.sync):
            return None
        value, bound = metric["median"], self.bound(record["params"])
        met = (operator.le if self.at_most else operator.ge)(value, bound)
        return {"target": self.text, "metric": self.metric, "value": value, "bound": bound,
                "op": "<=" if self.at_most else ">=", "met": met, "by": value - bound}


def _const(x: float) -> Callable[[dict[str, Any]], float]:
    return lambda params: x


TARGETS = (
    Target("throughput", "ratio_4_bots", "4 bots >= 50% of limit plain-ack drain", False, _const(0.5)),
    Target("submit", "ratio_submit_many", "submit_many >= 80% of raw pipelined publish", False, _const(0.8)),
    Target("submit", "ratio_populate", "corral populate >= 80% of raw pipelined publish", False, _const(0.8)),
    Target("latency", "ratio_start_p50", "enqueue-to-start p50 <= 1.5x limit publish-to-fetch p50", True, _const(1.5)),
    Target("latency", "ratio_start_p99", "enqueue-to-start p99 <= 3x limit publish-to-fetch p99", True, _const(3.0)),
    Target("recovery", "completed_after_kill_s", "killed bot's job completed within ack deadline + 1 s", True,
           lambda p: p["ack_wait_s"] + 1),
    Target("recovery", "dead_shown_after_kill_s", "dead bot shown dead within TTL + 1 s", True, lambda p: p["ttl_s"] + 1),
    Target("footprint", "peak_rss_mb", "bot peak RSS < 60 MB", True, _const(60.0)),
    Target("dashboard", "tui_peak_rss_mb", "TUI peak RSS < 200 MB (issue: 100,000 pending jobs, 100 bots)", True,
           _const(200.0)),
    *(Target("ledger", f"report_{name}_ms", f"report {name} within the shipped 10 s query timeout", True,
             lambda p: 1000 * p["shipped_query_timeout_s"])
      for name in ("operator-actions", "throughput", "rates-by-kind", "rates-by-bot", "durations", "slowest",
                   "retries", "dead-reasons")),
    Target("compare", "ratio_corral_taskiq", "corral >= 2.0x taskiq-nats on a lazy-fsync server", False, _const(2.0), "2m"),
    Target("compare", "ratio_corral_raw", "corral >= 40% of the raw plain-ack drain on a lazy server", False, _const(0.4), "2m"),
    Target("compare", "ratio_start_p50", "light-load start p50 <= taskiq-nats'", True, _const(1.0)),
    Target("compare", "ratio_start_p99", "light-load start p99 <= 1.5x taskiq-nats'", True, _const(1.5)),
    Target("compare", "ratio_enqueue", "enqueue >= 4x taskiq-nats", False, _const(4.0)),
    Target("compare", "corral_rss_mb", "bot RSS < 45 MB", True, _const(45.0)),
)


def verdicts(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for t in TARGETS if t.scenario == record["scenario"] and (v := t.check(record)) is not None]
