"""submit: jobs/s into the jobs stream - `corral populate N` (a subprocess) and submit_many in-process.

Both are compared with raw pipelined publishing (nats-py ``publish_async``)
of the same number of payloads the size of an encoded `sum` job, to a bare
work-queue stream on the same server. ``populate`` is reported twice: the
rate it prints itself (publishing only) and its wall time as a user sees it
(interpreter start, job generation, connect included).
"""

from __future__ import annotations

import json
import subprocess
import time

import nats

from corral.bench import raw
from corral.bench.scenarios import Context, Metric, Scenario
from corral.bench.server import provision_for_bench
from corral.core.handlers import generate
from corral.core.spawn import corral_argv, corral_env
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.core.log import get_logger
from corral.core.messages import encode
from corral.core.settings import Settings
from corral.core.submit import raise_for, submit_many


async def raw_rate(url: str, n: int, payload: bytes) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await raw.reset_stream(js)
        return await raw.publish_pipelined(js, n, payload)
    finally:
        await nc.close()


async def submit_many_rate(url: str, n: int) -> float:
    jobs = generate("sum", n, "default")  # generated before the clock starts
    nc = await connect(Settings(servers=(url,)), get_logger("bench"), wait=False)
    try:
        start = time.perf_counter()
        raise_for(await submit_many(nc.jetstream(), jobs))
        return n / (time.perf_counter() - start)
    finally:
        await nc.close()


def populate_rates(url: str, n: int) -> tuple[float, float]:
    """(rate populate reports, jobs / wall seconds of the whole command).

    Raises:
        CorralError: populate failed.
    """
    start = time.perf_counter()
    done = subprocess.run(corral_argv("populate", str(n), "--json", "--server", url), env=corral_env(),
                          capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise CorralError(f"corral populate exited {done.returncode}: {done.stderr[-1500:]}")
    report = json.loads(done.stdout)
    if report["accepted"] != n:
        raise CorralError(f"corral populate accepted {report['accepted']} of {n}")
    return report["rate"], n / wall


async def run(ctx: Context) -> dict[str, float]:
    n = ctx.size.submit_jobs
    payload = encode(generate("sum", 1, "default")[0])
    out = {"raw_publish_pipelined": await raw_rate(ctx.url, n, payload)}
    out["submit_many"] = await submit_many_rate(ctx.url, n)
    await provision_for_bench(ctx.url)  # empty the jobs stream again
    out["populate_reported"], out["populate_wall"] = populate_rates(ctx.url, n)
    await provision_for_bench(ctx.url)
    for key in ("submit_many", "populate_reported", "populate_wall"):
        out[f"ratio_{key.removesuffix('_reported')}"] = out[key] / out["raw_publish_pipelined"]
    return out


SCENARIO = Scenario(
    name="submit",
    summary="jobs/s submitted: corral populate and submit_many vs raw pipelined publish of job-sized payloads",
    run=run,
    metrics=(
        Metric("raw_publish_pipelined", "msg/s", "limit: raw publish_async, job-sized payloads"),
        Metric("submit_many", "jobs/s", "submit_many, in-process"),
        Metric("populate_reported", "jobs/s", "corral populate (rate it reports)"),
        Metric("populate_wall", "jobs/s", "corral populate (whole command, wall clock)"),
        Metric("ratio_submit_many", "x limit", "submit_many / raw publish"),
        Metric("ratio_populate", "x limit", "populate (reported) / raw publish"),
        Metric("ratio_populate_wall", "x limit", "populate (wall) / raw publish"),
    ),
    params=lambda size: {"jobs": size.submit_jobs, "payload_bytes": len(encode(generate("sum", 1, "default")[0]))},
)
