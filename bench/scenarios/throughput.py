"""throughput: a backlog of `sum` jobs drained by 1, 2, 4 (8) real `corral bot` processes.

The backlog is submitted with the job consumer paused and every bot ready,
then the consumer is resumed, so no bot gets a head start. jobs/s runs from
the first claim (earliest start, from STARTED events and results) to the last result stored (the
results stream's ``last_ts``). The baseline is the limit's plain-ack drain
(4 processes, fetch 100) of the same number of raw messages, on the same
server, in the same repetition.
"""

from __future__ import annotations

from corral.bench import raw
from corral.bench.corral_io import first_claim, pause_jobs, resume_jobs, wait_for_messages, parse_ts
from corral.bench.fleet import Fleet
from corral.bench.scenarios import Context, Metric, Scenario
from corral.bench.server import provision_for_bench
from corral.core.handlers import generate
from corral.core.connect import connect
from corral.core.log import get_logger
from corral.core.names import RESULTS_STREAM
from corral.core.settings import Settings
from corral.core.submit import raise_for, submit_many


async def drain_with_bots(ctx: Context, bots: int, *bot_args: str) -> float:
    """jobs/s for ``ctx.size.jobs`` sum jobs and ``bots`` bots (default concurrency)."""
    n = ctx.size.jobs
    await provision_for_bench(ctx.url)  # empty streams, so counts and first claim are this run's
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    try:
        js = nc.jetstream()
        await pause_jobs(js)
        raise_for(await submit_many(js, generate("sum", n, "default")))
        names = [f"tp{ctx.rep}-{bots}-{i}" for i in range(bots)]
        with Fleet(ctx.url, ctx.log_dir, names, *bot_args) as fleet:
            await fleet.wait_ready()
            await resume_jobs(js)
            state = await wait_for_messages(nc, RESULTS_STREAM, n, timeout=max(60.0, n / 20))
            start = await first_claim(js)
        return n / (parse_ts(state["last_ts"]) - start)
    finally:
        await nc.close()


async def run(ctx: Context) -> dict[str, float]:
    out = {"limit_drain_ack": (await raw.drain_baseline(ctx.url, ctx.size.jobs)).rate}
    for bots in ctx.size.bot_counts:
        out[f"bots_{bots}"] = await drain_with_bots(ctx, bots)
    for bots in ctx.size.bot_counts:
        out[f"ratio_{bots}_bots"] = out[f"bots_{bots}"] / out["limit_drain_ack"]
    # The same 4 bots also writing the events a result already implies (--full-events).
    out["bots_4_full"] = await drain_with_bots(ctx, 4, "--full-events")
    out["ratio_4_bots_full"] = out["bots_4_full"] / out["limit_drain_ack"]
    return out


def _metrics() -> tuple[Metric, ...]:
    counts = (1, 2, 4, 8)
    return (
        Metric("limit_drain_ack", "msg/s", "limit: plain-ack drain, 4 procs (same N)"),
        *(Metric(f"bots_{b}", "jobs/s", f"{b} bot(s), first claim to last result") for b in counts),
        *(Metric(f"ratio_{b}_bots", "x limit", f"{b} bot(s) / limit plain-ack drain") for b in counts),
        Metric("bots_4_full", "jobs/s", "4 bot(s) with --full-events"),
        Metric("ratio_4_bots_full", "x limit", "4 bot(s) --full-events / limit plain-ack drain"),
    )


SCENARIO = Scenario(
    name="throughput",
    summary="sum jobs drained by N real bots (default concurrency 8), vs the limit's plain-ack drain",
    run=run,
    metrics=_metrics(),
    params=lambda size: {"jobs": size.jobs, "bot_counts": list(size.bot_counts), "concurrency": 8},
)
