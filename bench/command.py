"""`corral bench SCENARIO` (and ``python -m corral.bench``): measure corral against raw nats-py on a private server.

Each run starts its own nats-server (the repository's nats.conf; for
``--sync 2m`` a copy with only ``sync_interval`` changed), provisions
streams/, runs the scenario ``--reps`` times, prints a table and writes a JSON
record. docs/performance.md explains the scenarios and holds the full-size
numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from corral.bench.scenarios import NAMES as SCENARIO_NAMES
from corral.core.errors import ConfigError

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


_METRIC_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (("metric", "left"), ("unit", "left"), ("median", "right"), ("min-max", "right"))


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark scenario on a private nats-server (docs/performance.md)")
    p.add_argument("scenario", choices=(*SCENARIO_NAMES, "all"), help="what to measure; `all` runs every scenario")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny", help="tiny: seconds, for CI; full: the documented numbers")
    p.add_argument("--reps", type=_positive_int, default=1, help="repetitions per fsync setting (median and min-max are reported)")
    p.add_argument("--sync", choices=("always", "2m", "both"), default="always",
                   help="server sync_interval: always (shipped), 2m (nats-server's default), or both")
    p.add_argument("--out", type=Path, help="write the JSON records here")
    p.add_argument("--logs", type=Path, help="folder for server and bot logs (default: a temporary folder)")
    p.set_defaults(func=cmd)


def _bench():
    # `bench` sits at the repository root beside core/; an install that predates it (the
    # editable finder lists packages explicitly) cannot import it, so say how to fix that.
    try:
        import corral.bench.runner
    except ImportError as e:
        raise ConfigError(f"the bench package is not importable ({e}); run from the repository root "
                          "or reinstall with `pip install -e .`") from e
    return corral.bench.runner


def _cross_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from corral.bench.scenarios.compare import cross_targets

    return cross_targets(records)


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}" if abs(x) >= 1 else f"{x:.3f}"


def render(record: dict[str, Any], console: Console) -> None:
    """Print one record: its metrics (median, min-max) and the targets it checks."""
    title = (f"{record['scenario']} ({record['size']}, sync={record['sync']}, {record['reps']} rep(s), "
             f"nats-server {record['server_version']}, {record['cpu_count']} CPUs, "
             f"load {record['load_avg_before'][0]:.2f}->{record['load_avg_after'][0]:.2f})")
    t = Table(title=title, title_justify="left")
    for col, justify in _METRIC_COLUMNS:
        t.add_column(col, justify=justify)
    for m in record["metrics"].values():
        t.add_row(m["label"], m["unit"], _fmt(m["median"]), f"{_fmt(m['min'])}-{_fmt(m['max'])}")
    if record["metrics"]:
        console.print(t)
    if record["targets"]:
        t = Table(title="targets", title_justify="left")
        for col in ("target", "value", "bound", "verdict"):
            t.add_column(col)
        for v in record["targets"]:
            verdict = "[green]met[/]" if v["met"] else f"[red]missed by {_fmt(abs(v['by']))}[/]"
            t.add_row(v["target"], _fmt(v["value"]), f"{v['op']} {_fmt(v['bound'])}", verdict)
        console.print(t)


def cmd(args: argparse.Namespace) -> int:
    runner = _bench()
    console = Console()
    names = SCENARIO_NAMES if args.scenario == "all" else (args.scenario,)
    records, failed = [], []
    for name in names:
        logs = args.logs / name if args.logs else None
        try:
            got = runner.run_scenario(name, args.size, args.reps, args.sync, logs,
                                      progress=lambda line: console.print(f"[dim]{line}[/]", highlight=False))
        except Exception as e:  # one failed scenario must not lose the others' numbers
            if len(names) == 1:
                raise
            console.print(f"[red]{name} failed: {type(e).__name__}: {e}[/]")
            failed.append({"scenario": name, "error": f"{type(e).__name__}: {e}"})
            continue
        for record in got:
            render(record, console)
            records.append(record)
    cross = _cross_targets(records)
    if cross:
        render({"scenario": "compare", "size": args.size, "reps": args.reps, "sync": "always vs 2m", "metrics": {},
                "targets": cross, "server_version": records[0]["server_version"], "cpu_count": records[0]["cpu_count"],
                "load_avg_before": records[0]["load_avg_before"], "load_avg_after": records[-1]["load_avg_after"]}, console)
    command = f"corral bench {args.scenario} --size {args.size} --reps {args.reps} --sync {args.sync}"
    if args.out:
        args.out.write_text(json.dumps({"command": command, "records": records, "cross_targets": cross, "failed": failed},
                                       indent=2) + "\n")
        console.print(f"wrote {args.out}")
    return 1 if failed else 0
