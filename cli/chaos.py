"""`corral chaos`: a fleet under faults, with proof that nothing was lost or duplicated."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from corral.harness.chaos import FAULTS, ChaosConfig, run_chaos
from corral.harness.cluster_chaos import CLUSTER_FAULTS, ClusterChaosConfig, run_cluster_chaos
from corral.cli.common import add_json, positive_float, positive_int, print_json, run
from corral.core.errors import ConfigError
from corral.core.log import get_logger


def register(sub) -> None:
    p = sub.add_parser("chaos", help="run jobs through bot kills, server restarts, freezes and network cuts; verify none lost")
    add_json(p)
    p.add_argument("--cluster", action="store_true",
                   help=f"run on a 3-node cluster with R3 streams; faults {','.join(CLUSTER_FAULTS)} (docs/reliability.md)")
    p.add_argument("--jobs", type=positive_int, help="jobs that must succeed (default 120; --cluster: 400, mixed kinds)")
    p.add_argument("--failing", type=int, help="fail jobs that must end dead-lettered (default 10; --cluster: 20)")
    p.add_argument("--bots", type=positive_int, help="bots, one of them behind a cuttable proxy (default 3; --cluster: 4, all proxied)")
    p.add_argument("--concurrency", type=positive_int, default=4, help="--cluster: jobs each bot runs at once (default 4)")
    p.add_argument("--ack-wait", type=positive_float, default=3.0, help="consumer ack deadline in seconds for the run (default 3)")
    p.add_argument("--faults", help=f"comma-separated, in order (default {','.join(FAULTS)}; --cluster: all of its own)")
    p.add_argument("--seed", type=int, help="random seed, to repeat a run")
    p.set_defaults(func=cmd)


def _config(args: argparse.Namespace) -> ChaosConfig:
    """The run's config: the single-node defaults, or the cluster's with ``--cluster``."""
    known = CLUSTER_FAULTS if args.cluster else FAULTS
    faults = tuple(f.strip() for f in (args.faults or ",".join(known)).split(",") if f.strip())
    unknown = set(faults) - set(known)
    if unknown:
        raise ConfigError(f"unknown faults {sorted(unknown)}; known{' with --cluster' if args.cluster else ''}: {', '.join(known)}")
    given = {k: v for k, v in (("jobs", args.jobs), ("failing", args.failing), ("bots", args.bots)) if v is not None}
    if given.get("failing", 0) < 0 or given.get("bots", 2) < 2:
        raise ConfigError("--failing must be 0 or more and --bots at least 2")
    if args.cluster:
        return ClusterChaosConfig(**given, concurrency=args.concurrency, ack_wait=args.ack_wait, faults=faults, seed=args.seed)
    return ChaosConfig(**given, ack_wait=args.ack_wait, faults=faults, seed=args.seed)


def cmd(args: argparse.Namespace) -> int:
    config = _config(args)
    report = run(run_cluster_chaos if args.cluster else run_chaos, config, get_logger("chaos"))
    if args.json:
        print_json(report.as_dict())
    else:
        console = Console()
        t = Table(title="faults")
        cols = ("fault", "at (s)", "target", "recovery (s)") + (("in flight", "new leader (s)", "rejoined (s)") if args.cluster else ())
        for col in cols:
            t.add_column(col, no_wrap=col == "fault")
        for f in report.faults:
            extra = (str(f.held), _secs(f.leader_s), _secs(f.rejoined_s)) if args.cluster else ()
            t.add_row(f.fault, f"{f.at:.1f}", f.target, _secs(f.recovery_s), *extra)
        console.print(t)
        console.print(
            f"submitted {report.submitted} ({report.expected_dead} meant to fail) · completed {report.completed} · "
            f"dead {report.dead} · lost {len(report.lost)} · duplicated {len(report.duplicated)} · "
            f"wrong outcome {len(report.unexpected)} · {report.seconds:.1f}s"
        )
        if report.ok:
            console.print("[green]OK: every job has exactly one outcome[/]")
        else:
            console.print(f"[red]FAILED[/]: lost {report.lost[:5]} duplicated {report.duplicated[:5]} unexpected {report.unexpected[:5]}")
    return 0 if report.ok else 1


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
