"""limit: raw nats-py on this box - pipelined publish, a 4-process drain, light-load latency."""

from __future__ import annotations

import anyio
import nats

from corral.bench import raw
from corral.bench.scenarios import Context, Metric, Scenario, latency_metrics
from corral.bench.stats import latency_summary

DRAINERS = 4


async def run(ctx: Context) -> dict[str, float]:
    n = ctx.size.messages
    nc = await nats.connect(ctx.url)
    try:
        js = nc.jetstream()
        await raw.reset_stream(js)
        published = await raw.publish_pipelined(js, n)
        plain = await anyio.to_thread.run_sync(raw.drain, ctx.url, DRAINERS, "ack", n)
        await raw.publish_pipelined(js, n)
        synced = await anyio.to_thread.run_sync(raw.drain, ctx.url, DRAINERS, "ack_sync", n)
    finally:
        await nc.close()
    latencies = await raw.publish_to_fetch(ctx.url, ctx.size.latency_samples)
    return {
        "publish_pipelined": published,
        "drain_ack": plain.rate,
        "drain_ack_sync": synced.rate,
        **latency_summary("publish_to_fetch", latencies),
    }


SCENARIO = Scenario(
    name="limit",
    summary="raw nats-py: pipelined publish, 4 processes draining one pull consumer, publish-to-fetch latency",
    run=run,
    metrics=(
        Metric("publish_pipelined", "msg/s", "pipelined publish (publish_async)"),
        Metric("drain_ack", "msg/s", f"drain, {DRAINERS} procs, fetch {raw.FETCH_BATCH}, plain ack"),
        Metric("drain_ack_sync", "msg/s", f"drain, {DRAINERS} procs, fetch {raw.FETCH_BATCH}, ack_sync each"),
        *latency_metrics("publish_to_fetch", "publish-to-fetch"),
    ),
    params=lambda size: {"messages": size.messages, "payload_bytes": len(raw.PAYLOAD), "drainers": DRAINERS,
                         "latency_samples": size.latency_samples},
)
