"""What ``@process`` costs next to a thread: ``python -m corral.bench.isolation [JOBS]``.

Prints, for a handler that does nothing: the per-job round trip in a thread and in a warm child
process, the first job on a fresh child (interpreter start plus imports), how long a cancelled
job takes to end with a cooperative and with a stubborn handler, and an idle child's memory.
No server is involved: this is the executor's part of a job only. docs/features.md quotes it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import anyio

from corral.bots import isolation
from corral.bots.isolation import ChildPool, run_isolated
from corral.core.handlers import HandlerCancelled, JobContext
from corral.core.messages import make_job

SPEC = "corral.bench.isolation:noop"


def noop(args: dict, ctx: JobContext) -> int:
    return 1


def spin(args: dict, ctx: JobContext) -> None:
    """Sleeps until cancelled; cooperative unless ``stubborn`` (then it ignores HandlerCancelled)."""
    while True:
        try:
            time.sleep(0.01)
        except HandlerCancelled:
            if not args.get("stubborn"):
                raise


def _ctx() -> JobContext:
    return JobContext(job=make_job("bench", {}), attempt=1, bot="bench")


async def _per_job(jobs: int) -> tuple[float, float]:
    ctx = _ctx()
    await run_isolated(SPEC, {}, ctx)  # start the child outside the timing
    started = time.perf_counter()
    for _ in range(jobs):
        await anyio.to_thread.run_sync(noop, {}, ctx)
    thread = (time.perf_counter() - started) / jobs
    started = time.perf_counter()
    for _ in range(jobs):
        await run_isolated(SPEC, {}, ctx)
    return thread, (time.perf_counter() - started) / jobs


async def _cold_start(samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        pool = ChildPool()
        started = time.perf_counter()
        await pool.run(SPEC, {}, _ctx())
        times.append(time.perf_counter() - started)
        await pool._idle.pop().stop(isolation.KILL_GRACE)
    return times


async def _stop_latency(stubborn: bool) -> float:
    """Seconds from the cancel to the job's end, the child gone."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_isolated, "corral.bench.isolation:spin", {"stubborn": stubborn}, _ctx())
            await anyio.sleep(0.5)  # a benchmark, not a test: give the child time to start
            started = time.perf_counter()
            scope.cancel()
    return time.perf_counter() - started


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(jobs: int) -> None:
    thread, process = await _per_job(jobs)
    print(f"per job, {jobs} jobs   thread {thread * 1e3:.3f} ms   warm child {process * 1e3:.3f} ms")
    if sys.platform.startswith("linux"):
        child = isolation._pool.get()._idle[-1].process.pid
        print(f"idle child RSS {_rss_mib(child):.1f} MiB (this process: {_rss_mib(os.getpid()):.1f} MiB)")
    cold = await _cold_start(5)
    print(f"first job on a fresh child: median {statistics.median(cold) * 1e3:.0f} ms "
          f"(min {min(cold) * 1e3:.0f}, max {max(cold) * 1e3:.0f})")
    print(f"cancel -> job ended, child gone: cooperative {await _stop_latency(False) * 1e3:.0f} ms, "
          f"stubborn {await _stop_latency(True) * 1e3:.0f} ms (KILL_GRACE {isolation.KILL_GRACE} s)")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
