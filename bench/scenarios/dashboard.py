"""dashboard: the TUI's resident memory with a big backlog pending and many live bots.

The job consumer is paused, ``dash_jobs`` `sum` jobs are submitted (so they
stay pending) and ``dash_bots`` real `corral bot` processes are started in
batches of 10 (each batch ready before the next, so a 2-core box copes); they
idle, the consumer being paused. Once ``corral.core.status.live_bots`` lists them
all, the real Textual app runs headless in its own process
(:mod:`corral.bench.tui_runner`): it waits until it shows every bot, then visits each
screen key in turn for ``dash_seconds``. Its peak RSS is sampled both inside
(a 50 ms thread) and from here (psutil on its pid); the larger is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import anyio
import psutil
from anyio.abc import Process

from corral.bench.corral_io import pause_jobs
from corral.bench.fleet import BotProc
from corral.bench.scenarios import Context, Metric, Scenario
from corral.core.handlers import generate
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.core.log import get_logger
from corral.core.backlog import unfinished
from corral.core.settings import Settings
from corral.core.status import live_bots
from corral.core.submit import raise_for, submit_many

MB = 1024 * 1024
BATCH = 10  #: bots started at once
SAMPLE_EVERY = 0.05


async def wait_live(js, count: int, timeout: float) -> float:
    """Seconds until ``live_bots`` lists ``count`` bots.

    Raises:
        CorralError: not within ``timeout`` seconds.
    """
    t0 = time.monotonic()
    while len(await live_bots(js)) < count:
        if time.monotonic() - t0 > timeout:
            raise CorralError(f"only {len(await live_bots(js))} of {count} bots live after {timeout}s")
        await anyio.sleep(0.2)
    return time.monotonic() - t0


async def run_tui(url: str, seconds: float, bots: int, log_dir) -> dict[str, float]:
    """Run corral.bench.tui_runner; sample its RSS from outside too. Returns its JSON plus ``outside_peak_rss_mb``."""
    out_path, err_path = log_dir / "tui-runner.out", log_dir / "tui-runner.err"
    cmd = [sys.executable, "-m", "corral.bench.tui_runner", url, "--seconds", str(seconds), "--bots", str(bots)]
    async with await anyio.open_file(out_path, "wb") as out, await anyio.open_file(err_path, "wb") as err:
        proc = await anyio.open_process(cmd, stdout=out.wrapped, stderr=err.wrapped, stdin=subprocess.DEVNULL)
        async with proc:
            try:
                peak = await _peak_rss(proc, seconds + 240)
            finally:
                if proc.returncode is None:  # timed out: do not leave the runner behind
                    proc.kill()
    lines = [ln for ln in (await anyio.Path(out_path).read_text(errors="replace")).splitlines() if ln.startswith("{")]
    if not lines:
        raise CorralError(f"tui runner gave no result ({proc.returncode}); stderr: {(await anyio.Path(err_path).read_text())[-1500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result or proc.returncode:
        raise CorralError(f"tui runner failed ({proc.returncode}): {result.get('error')}")
    result["outside_peak_rss_mb"] = peak / MB
    return result


async def _peak_rss(proc: Process, timeout: float) -> int:
    """Sample ``proc``'s resident memory every SAMPLE_EVERY seconds until it exits; the largest, in bytes."""
    ps, peak = psutil.Process(proc.pid), 0
    with anyio.fail_after(timeout):
        while proc.returncode is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                pass
            await anyio.sleep(SAMPLE_EVERY)
    return peak


async def run(ctx: Context) -> dict[str, float]:
    n, b = ctx.size.dash_jobs, ctx.size.dash_bots
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    procs: list[BotProc] = []
    try:
        js = nc.jetstream()
        await pause_jobs(js)
        raise_for(await submit_many(js, generate("sum", n, "default")))
        for start in range(0, b, BATCH):
            batch = [BotProc(ctx.url, f"dash{ctx.rep}-{i}", ctx.log_dir) for i in range(start, min(b, start + BATCH))]
            procs += batch
            with anyio.fail_after(120):
                while not all(p.ready() for p in batch):  # noqa: ASYNC110 - polls other processes: no event to wait on
                    await anyio.sleep(0.1)
        live_s = await wait_live(js, b, timeout=60)
        bots_rss = sum(p.rss() for p in procs) / MB
        tui = await run_tui(ctx.url, ctx.size.dash_seconds, b, ctx.log_dir)
        pending = await unfinished(js)  # from the consumers: the stream also holds acked, unpurged jobs
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.terminate()
        def stop_all() -> None:
            for p in procs:
                p.stop()

        await anyio.to_thread.run_sync(stop_all)
        await nc.close()
    if pending < n:
        raise CorralError(f"only {pending} of {n} jobs pending during the run: the consumer was not held")
    return {
        "tui_peak_rss_mb": max(tui["peak_rss_mb"], tui["outside_peak_rss_mb"]),
        "tui_rss_after_mb": tui["rss_after_mb"],
        "tui_max_pause_ms": tui["max_pause_ms"],
        "tui_p50_pause_ms": tui["p50_pause_ms"],
        "tui_ready_s": tui["ready_s"],
        "screen_visits": tui["visits"],
        "bots_shown": tui["seen_bots"],
        "pending_jobs": pending,
        "bots_total_rss_mb": bots_rss,
        "live_after_ready_s": live_s,  # the last batch ready -> live_bots listing every bot
    }


SCENARIO = Scenario(
    name="dashboard",
    summary="the headless TUI's peak RSS with a pending backlog and many idle live bots, visiting every screen",
    run=run,
    metrics=(
        Metric("tui_peak_rss_mb", "MB", "TUI peak RSS (its own process)"),
        Metric("tui_rss_after_mb", "MB", "TUI RSS after the screen visits"),
        Metric("tui_max_pause_ms", "ms", "slowest key-press round trip (pilot.pause)"),
        Metric("tui_p50_pause_ms", "ms", "median key-press round trip"),
        Metric("tui_ready_s", "s", "TUI start to every bot shown"),
        Metric("screen_visits", "", "screen switches made"),
        Metric("bots_shown", "", "live bots the TUI showed at the end"),
        Metric("pending_jobs", "", "jobs pending on the jobs stream"),
        Metric("bots_total_rss_mb", "MB", "all idle bots' RSS, summed"),
        Metric("live_after_ready_s", "s", "last bot ready to live_bots listing all"),
    ),
    params=lambda size: {"pending_jobs": size.dash_jobs, "bots": size.dash_bots, "visit_seconds": size.dash_seconds,
                         "terminal": "120x40", "bot_start_batch": BATCH, "sample_every_s": SAMPLE_EVERY},
)
