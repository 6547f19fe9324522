"""fairness: tenant A floods, then tenant B submits a few; B's wait and share, with and without fairness keys.

Two runs on the same server and bots. **plain**: both tenants' jobs go straight to the jobs
stream, so B's jobs queue behind A's whole flood. **fair**: each job carries its tenant as its
fairness key (core/fairness.py), so the dispatcher deals starts out in turn between A and B.

A submits ``fair_a`` ``sum`` jobs (pipelined) and then B ``fair_b``, while ``fair_bots`` bots drain.
B's wait is enqueue (the job's ``created_at``) to start (its result's ``started_at``). The shares
are counted over the starts from B's first submit to B's last start: the time both tenants had
work waiting (A's flood outlasts B's jobs in both runs; ``a_backlogged`` says whether it did).
"""

from __future__ import annotations

import time

import anyio
import msgspec

from corral.bench.fleet import Fleet
from corral.bench.scenarios import Context, Metric, Scenario
from corral.bench.stats import percentile
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.core.log import get_logger
from corral.core.messages import JobResult, make_job
from corral.core.names import RESULTS_PREFIX
from corral.core.settings import Settings
from corral.core.submit import raise_for, submit_many

TIMEOUT = 600.0  #: seconds one run may take to drain before the scenario fails
_decoder = msgspec.json.Decoder(JobResult)


async def one_run(js, nc, tenants: dict[str, int], fair: bool) -> dict[str, float]:
    """Submit A's then B's jobs; the B wait percentiles, the shares and the drain rate."""
    total = sum(tenants.values())
    started: dict[str, tuple[str, float, float]] = {}  #: job id -> (tenant, created_at, started_at)
    done = anyio.Event()

    async def on_result(msg) -> None:
        try:
            r = _decoder.decode(msg.data)
        except msgspec.DecodeError:
            return
        if r.job is not None and r.job.correlation_id in tenants:
            started[r.job_id] = (r.job.correlation_id, r.job.created_at, r.started_at)
            if len(started) >= total:
                done.set()

    sub = await nc.subscribe(f"{RESULTS_PREFIX}>", cb=on_result, pending_msgs_limit=10 * total)
    began = time.time()
    b_submitted = began
    try:
        for tenant, n in tenants.items():
            if tenant == "B":
                b_submitted = time.time()
            jobs = [make_job("sum", {"a": 1, "b": 2}, correlation_id=tenant, fairness_key=tenant if fair else None)
                    for _ in range(n)]
            raise_for(await submit_many(js, jobs))
        with anyio.fail_after(TIMEOUT):
            await done.wait()
    except TimeoutError:
        raise CorralError(f"fairness run ({'fair' if fair else 'plain'}) drained {len(started)}/{total} in {TIMEOUT}s") from None
    finally:
        await sub.unsubscribe()
    return summarise(list(started.values()), b_submitted, time.time() - began)


def summarise(starts: list[tuple[str, float, float]], b_submitted: float, elapsed: float) -> dict[str, float]:
    b = [(c, s) for t, c, s in starts if t == "B"]
    waits = [s - c for c, s in b]
    last_b = max(s for _, s in b)
    window = [t for t, _, s in starts if b_submitted <= s <= last_b]
    last_a = max(s for t, _, s in starts if t == "A")
    return {
        "b_first_start_ms": (min(s for _, s in b) - b_submitted) * 1000,
        "b_wait_p50_ms": percentile(waits, 50) * 1000,
        "b_wait_p99_ms": percentile(waits, 99) * 1000,
        "b_share": window.count("B") / len(window),
        "a_share": window.count("A") / len(window),
        "a_backlogged": float(last_a > last_b),
        "jobs_per_s": len(starts) / elapsed,
    }


async def run(ctx: Context) -> dict[str, float]:
    size = ctx.size
    tenants = {"A": size.fair_a, "B": size.fair_b}
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    out: dict[str, float] = {}
    try:
        js = nc.jetstream()
        names = [f"fair{ctx.rep}-{i}" for i in range(size.fair_bots)]
        with Fleet(ctx.url, ctx.log_dir, names, "--concurrency", "8") as fleet:
            await fleet.wait_ready()
            for mode, fair in (("plain", False), ("fair", True)):
                for key, value in (await one_run(js, nc, tenants, fair)).items():
                    out[f"{mode}_{key}"] = value
    finally:
        await nc.close()
    out["ratio_b_wait_p50"] = out["plain_b_wait_p50_ms"] / max(out["fair_b_wait_p50_ms"], 1e-3)
    return out


def _metrics() -> tuple[Metric, ...]:
    out = []
    for mode in ("plain", "fair"):
        out += [
            Metric(f"{mode}_b_first_start_ms", "ms", f"{mode}: B's first submit to B's first start"),
            Metric(f"{mode}_b_wait_p50_ms", "ms", f"{mode}: B's wait (enqueue to start) p50"),
            Metric(f"{mode}_b_wait_p99_ms", "ms", f"{mode}: B's wait p99"),
            Metric(f"{mode}_b_share", "of starts", f"{mode}: B's share of starts while both wait"),
            Metric(f"{mode}_a_share", "of starts", f"{mode}: A's share of starts while both wait"),
            Metric(f"{mode}_a_backlogged", "1 = yes", f"{mode}: A still had work when B's last job started"),
            Metric(f"{mode}_jobs_per_s", "jobs/s", f"{mode}: jobs drained per second (submit to last result)"),
        ]
    return (*out, Metric("ratio_b_wait_p50", "x", "B's wait p50, plain / fair"))


SCENARIO = Scenario(
    name="fairness",
    summary="tenant A floods, then B submits: B's wait and share of starts, plain jobs vs fairness keys",
    run=run,
    metrics=_metrics(),
    params=lambda size: {"a_jobs": size.fair_a, "b_jobs": size.fair_b, "bots": size.fair_bots, "bot_concurrency": 8,
                         "kind": "sum", "dispatch_window": 64},
)
