"""latency: one job at a time through one idle bot - enqueue-to-start and enqueue-to-result.

Enqueue is the job's ``created_at`` (set just before ``submit``); start is the
result's ``started_at`` (the handler's start: a first delivery writes no STARTED event); result is when the result reaches a subscriber on
``corral.results.<id>.*``. All three are wall clock on this machine. The
baseline is the limit's publish-to-fetch latency (a fetch waiting, one
message at a time), measured on the same server in the same repetition.
"""

from __future__ import annotations

import time

import anyio
import nats

from corral.bench import raw
from corral.bench.fleet import Fleet
from corral.bench.scenarios import Context, Metric, Scenario, latency_metrics
from corral.bench.stats import latency_summary
from corral.core.connect import connect
from corral.core.log import get_logger
from corral.core.messages import make_job, result_decoder
from corral.core.names import job_results_subject
from corral.core.settings import Settings
from corral.core.submit import submit

TIMEOUT = 10.0  #: seconds one job may take before the run fails


async def one_job(nc, js) -> tuple[float, float]:
    """(enqueue-to-start, enqueue-to-result) in seconds for one `sum` job."""
    job = make_job("sum", {"a": 1, "b": 2})
    results = await nc.subscribe(job_results_subject(job.id))
    try:
        await submit(js, job)
        with anyio.fail_after(TIMEOUT):
            result_msg = await results.next_msg(timeout=TIMEOUT)
            got_result = time.time()
    finally:
        await results.unsubscribe()
    started = result_decoder.decode(result_msg.data).started_at
    return started - job.created_at, got_result - job.created_at


async def run(ctx: Context) -> dict[str, float]:
    nc = await nats.connect(ctx.url)
    try:
        await raw.reset_stream(nc.jetstream())
    finally:
        await nc.close()
    baseline = latency_summary("limit_publish_to_fetch", await raw.publish_to_fetch(ctx.url, ctx.size.latency_samples))
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    try:
        js = nc.jetstream()
        with Fleet(ctx.url, ctx.log_dir, [f"lat{ctx.rep}"]) as fleet:
            await fleet.wait_ready()
            await one_job(nc, js)  # warm-up: first-job costs (imports, inbox setup) are not light load
            samples = [await one_job(nc, js) for _ in range(ctx.size.latency_samples)]
    finally:
        await nc.close()
    out = {**baseline, **latency_summary("enqueue_to_start", [s for s, _ in samples]),
           **latency_summary("enqueue_to_result", [r for _, r in samples])}
    for p in (50, 95, 99):
        out[f"ratio_start_p{p}"] = out[f"enqueue_to_start_p{p}_ms"] / out[f"limit_publish_to_fetch_p{p}_ms"]
    return out


SCENARIO = Scenario(
    name="latency",
    summary="one job at a time, one idle bot: enqueue-to-start and enqueue-to-result vs limit publish-to-fetch",
    run=run,
    metrics=(
        *latency_metrics("limit_publish_to_fetch", "limit: publish-to-fetch"),
        *latency_metrics("enqueue_to_start", "enqueue-to-start"),
        *latency_metrics("enqueue_to_result", "enqueue-to-result"),
        *(Metric(f"ratio_start_p{p}", "x limit", f"enqueue-to-start p{p} / limit p{p}") for p in (50, 95, 99)),
    ),
    params=lambda size: {"samples": size.latency_samples, "bots": 1},
)
