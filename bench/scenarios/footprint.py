"""footprint: a bot's resident memory (psutil RSS) idle and while draining a backlog.

One bot, default concurrency; the backlog is submitted with the consumer
paused, the bot's idle RSS is read once it is ready, then the consumer is
resumed and RSS sampled every 50 ms until every result is recorded.
"""

from __future__ import annotations

import anyio

from corral.bench.corral_io import pause_jobs, resume_jobs, stream_state
from corral.bench.fleet import Fleet
from corral.bench.scenarios import Context, Metric, Scenario
from corral.core.handlers import generate
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.core.log import get_logger
from corral.core.names import RESULTS_STREAM
from corral.core.settings import Settings
from corral.core.submit import raise_for, submit_many

MB = 1024 * 1024
SAMPLE_EVERY = 0.05  #: seconds between RSS samples


async def run(ctx: Context) -> dict[str, float]:
    n = ctx.size.jobs
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    try:
        js = nc.jetstream()
        await pause_jobs(js)
        raise_for(await submit_many(js, generate("sum", n, "default")))
        with Fleet(ctx.url, ctx.log_dir, [f"fp{ctx.rep}"]) as fleet:
            bot = fleet.bots[0]
            await fleet.wait_ready()
            idle = bot.rss()
            await resume_jobs(js)
            peak, polls = idle, 0
            with anyio.fail_after(max(60.0, n / 20)):
                while True:
                    peak = max(peak, bot.rss())
                    polls += 1
                    if polls % 4 == 0 and (await stream_state(nc, RESULTS_STREAM))["messages"] >= n:
                        break
                    await anyio.sleep(SAMPLE_EVERY)
            after = bot.rss()
    finally:
        await nc.close()
    if not idle:
        raise CorralError("could not read the bot's RSS")
    return {"idle_rss_mb": idle / MB, "peak_rss_mb": max(peak, after) / MB, "after_rss_mb": after / MB}


SCENARIO = Scenario(
    name="footprint",
    summary="one bot's RSS idle and its peak while draining a backlog of sum jobs",
    run=run,
    metrics=(
        Metric("idle_rss_mb", "MB", "RSS when ready, idle"),
        Metric("peak_rss_mb", "MB", "peak RSS under load"),
        Metric("after_rss_mb", "MB", "RSS after the backlog"),
    ),
    params=lambda size: {"jobs": size.jobs, "concurrency": 8, "sample_every_s": SAMPLE_EVERY},
)
