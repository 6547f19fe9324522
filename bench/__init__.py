"""corral's benchmark harness: scenarios measured against raw nats-py on a private nats-server.

Run it as ``corral bench SCENARIO`` (or ``python -m bench SCENARIO``); from
Python, :func:`run_scenario` returns the records. docs/performance.md has the
scenarios, the full-size numbers and the targets.

Nothing heavy is imported here: :mod:`corral.bench.drainer` processes start from this
package and must start fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FULL", "SCENARIOS", "SIZES", "TINY", "Size", "run_scenario"]


def __getattr__(name: str) -> Any:
    if name == "run_scenario":
        from corral.bench.runner import run_scenario

        return run_scenario
    if name == "SCENARIOS":
        from corral.bench.scenarios import NAMES

        return NAMES
    if name in ("SIZES", "TINY", "FULL", "Size"):
        from corral.bench import sizes

        return getattr(sizes, name)
    raise AttributeError(name)
