"""`corral chaos`: a fleet under faults, with proof that nothing was lost or duplicated."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from corral.harness.chaos import FAULTS, ChaosConfig, run_chaos
from corral.cli.common import add_json, positive_float, positive_int, print_json, run
from corral.core.errors import ConfigError
from corral.core.log import get_logger


def register(sub) -> None:
    p = sub.add_parser("chaos", help="run jobs through bot kills, server restarts, freezes and network cuts; verify none lost")
    add_json(p)
    p.add_argument("--jobs", type=positive_int, default=120, help="sleep jobs that must succeed (default 120)")
    p.add_argument("--failing", type=int, default=10, help="fail jobs that must end dead-lettered (default 10)")
    p.add_argument("--bots", type=positive_int, default=3, help="bots, one of them behind a cuttable proxy (default 3)")
    p.add_argument("--ack-wait", type=positive_float, default=3.0, help="consumer ack deadline in seconds for the run (default 3)")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, in order (default {','.join(FAULTS)})")
    p.add_argument("--seed", type=int, help="random seed, to repeat a run")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = set(faults) - set(FAULTS)
    if unknown or args.bots < 2:
        raise ConfigError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}" if unknown else "--bots must be at least 2")
    config = ChaosConfig(jobs=args.jobs, failing=args.failing, bots=args.bots, ack_wait=args.ack_wait, faults=faults, seed=args.seed)
    report = run(run_chaos, config, get_logger("chaos"))
    if args.json:
        print_json(report.as_dict())
    else:
        console = Console()
        t = Table(title="faults")
        for col in ("fault", "at (s)", "target", "recovery (s)"):
            t.add_column(col)
        for f in report.faults:
            t.add_row(f.fault, f"{f.at:.1f}", f.target, "-" if f.recovery_s is None else f"{f.recovery_s:.2f}")
        console.print(t)
        console.print(
            f"submitted {report.submitted} ({report.expected_dead} meant to fail) · completed {report.completed} · "
            f"dead {report.dead} · lost {len(report.lost)} · duplicated {len(report.duplicated)} · "
            f"wrong outcome {len(report.unexpected)} · {report.seconds:.1f}s"
        )
        console.print("[green]OK: every job has exactly one outcome[/]" if report.ok else f"[red]FAILED[/]: lost {report.lost[:5]} duplicated {report.duplicated[:5]} unexpected {report.unexpected[:5]}")
    return 0 if report.ok else 1
