"""compare: corral beside raw nats-py and taskiq-nats, same server, same no-op jobs, same 4 processes.

Per repetition, on one server (the runner starts one per fsync setting):

- **raw**: the limit's plain-ack drain (4 nats-py processes, fetch 100, ack each).
- **taskiq-nats**: ``PullBasedJetStreamBroker`` (pull batch 100, no result backend), 4 worker
  processes (``taskiq worker -w 4``). It keeps no result: a job is done when its handler returns.
- **corral**: 4 ``corral bot`` processes at the default concurrency with an async handler. A job
  is done when its fenced result is stored (durable under ``sync_interval: always``) and acked.

Every job marks its start and end in shared memory (:mod:`corral.bench.peer`), so each drain
rate is jobs over first start to last finish (for corral, the last result stored). Both queues
are held paused while the backlog is enqueued and every worker is waiting, so no process gets
a head start. Enqueue rates are each system's own API (taskiq's ``kiq`` awaited one by one,
corral's ``submit_many``). Light-load enqueue-to-start is one job at a time into idle workers: each
job is enqueued once the one before is done (taskiq-nats: its handler returned; corral: its result
stored).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats
import psutil
from nats.js.api import ConsumerConfig, StreamConfig

from corral.bench import peer, peer_taskiq, raw
from corral.bench.corral_io import FAR_FUTURE, parse_ts, pause_jobs, resume_jobs, wait_for_messages
from corral.bench.fleet import Fleet
from corral.bench.scenarios import Context, Metric, Scenario
from corral.bench.server import provision_for_bench
from corral.bench.stats import percentile
from corral.core.errors import ConfigError, CorralError
from corral.core.messages import make_job
from corral.core.history import result_message
from corral.core.names import RESULTS_STREAM
from corral.core.submit import raise_for, submit, submit_many

WORKERS = 4


def _job_id(rep: int, i: int) -> str:
    # Unique per repetition: the reps share one server, and the jobs stream's duplicate
    # window outlives a purge, so a reused id would be accepted as a duplicate and never run.
    return f"cmp{rep}-{i}"


def _jobs(n: int, rep: int, offset: int = 0):
    return (make_job("add", {"i": offset + i, "a": i, "b": 1}, id=_job_id(rep, offset + i)) for i in range(n))


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise CorralError(f"compare: timed out after {timeout:.0f}s waiting for {what}")
        await anyio.sleep(0.01)


async def _start_latency(marks: peer.Marks, samples: int, offset: int, enqueue,
                         done: Callable[[int], Awaitable[bool]]) -> list[float]:
    """Milliseconds from just before each enqueue to the handler's start, one job at a time.

    Each job is enqueued once the one before is done by its system's own definition (``done``):
    for taskiq-nats its handler returned, for corral its result is stored. Enqueued at the previous
    job's start instead, as until session 8, a corral sample under ``always`` shared the disk with
    the previous job's result fsync, which taskiq-nats does not write.
    """
    out = []
    for k in range(samples):
        i = offset + k
        t0 = time.time()
        await enqueue(i)
        deadline = time.monotonic() + 30
        while not marks.started(i):
            if time.monotonic() > deadline:
                raise CorralError(f"compare: job {i} did not start within 30 s")
            await anyio.sleep(0.0002)
        out.append((marks.started(i) - t0) * 1000)
        while not await done(i):
            if time.monotonic() > deadline:
                raise CorralError(f"compare: job {i} did not finish within 30 s")
            await anyio.sleep(0.0002)
    return out


def _ended(marks: peer.Marks) -> Callable[[int], Awaitable[bool]]:
    """taskiq-nats' job is done when its handler returned (it keeps no result)."""
    async def done(i: int) -> bool:
        return bool(marks.ended(i))
    return done


async def _stored(js, job_id: str) -> bool:
    """corral's job is done when its result is stored."""
    return await result_message(js, job_id) is not None


def _latency(prefix: str, samples: list[float]) -> dict[str, float]:
    return {f"{prefix}_start_p50_ms": percentile(samples, 50), f"{prefix}_start_p99_ms": percentile(samples, 99)}


# --- taskiq-nats ------------------------------------------------------------------------------

async def _taskiq_reset(js) -> None:
    try:
        await js.delete_stream(peer.TASKIQ_STREAM)
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(StreamConfig(name=peer.TASKIQ_STREAM, subjects=[peer.TASKIQ_SUBJECT]))
    await js.add_consumer(peer.TASKIQ_STREAM, ConsumerConfig(durable_name=peer.TASKIQ_DURABLE))


def _taskiq_workers(url: str, marks: peer.Marks, ctx: Context, batch: int) -> subprocess.Popen:
    taskiq = os.path.join(os.path.dirname(sys.executable), "taskiq")
    env = {**os.environ, peer.MARKS_ENV: marks.name, peer.URL_ENV: url, peer.BATCH_ENV: str(batch)}
    with open(ctx.log_dir / f"taskiq-batch{batch}.log", "ab") as log:
        return subprocess.Popen([taskiq, "worker", "corral.bench.peer_taskiq:broker", "-w", str(WORKERS), "--log-level", "WARNING"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                process_group=0)  # its own process group: _stop ends every process in it


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    """User plus system CPU seconds the processes have used so far (a gone one counts 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class CpuMeter:
    """CPU microseconds per job of the workers and of the server over one drain.

    Where a drain rate is bounded by two shared cores, this says by whom: the issue's targets
    need corral's workers and server together under a budget of 2 cores / the target rate.
    """

    def __init__(self, workers: list[psutil.Process], server_pid: int) -> None:
        self.workers = workers
        self.server = [psutil.Process(server_pid)] if server_pid else []
        self.start = (_cpu_seconds(self.workers), _cpu_seconds(self.server))

    def per_job(self, prefix: str, jobs: int) -> dict[str, float]:
        workers, server = _cpu_seconds(self.workers) - self.start[0], _cpu_seconds(self.server) - self.start[1]
        out = {f"{prefix}_cpu_us_per_job": workers * 1e6 / jobs}
        if self.server:
            out[f"{prefix}_server_cpu_us_per_job"] = server * 1e6 / jobs
        return out


def _tree_rss_mb(proc: subprocess.Popen) -> float:
    """Mean RSS of the worker processes (the children of taskiq's parent)."""
    kids = psutil.Process(proc.pid).children()
    return sum(k.memory_info().rss for k in kids) / max(len(kids), 1) / 2**20


async def _ready_workers(js, workers: subprocess.Popen, ctx: Context) -> None:
    """Until each of the worker processes has a pull request waiting on the durable."""
    deadline = time.monotonic() + 60
    while ((await js.consumer_info(peer.TASKIQ_STREAM, peer.TASKIQ_DURABLE)).num_waiting or 0) < WORKERS:
        if workers.poll() is not None or time.monotonic() > deadline:
            raise CorralError(f"compare: taskiq workers not ready (see {ctx.log_dir})")
        await anyio.sleep(0.05)


def _stop(workers: subprocess.Popen) -> None:
    """Stop taskiq's parent, then whatever of its group outlived it: a worker the parent forked as it
    was shutting down was left running, orphaned, after a compare run."""
    workers.send_signal(signal.SIGINT)
    try:
        workers.wait(30)
    except subprocess.TimeoutExpired:
        workers.kill()
        workers.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(workers.pid, signal.SIGKILL)


async def run_taskiq(ctx: Context, marks: peer.Marks) -> dict[str, float]:
    from taskiq.kicker import AsyncKicker

    n = ctx.size.messages
    nc = await nats.connect(ctx.url)
    js = nc.jetstream()
    client = peer_taskiq.taskiq_broker(ctx.url)
    try:
        await _taskiq_reset(js)
        await js.pause_consumer(peer.TASKIQ_STREAM, peer.TASKIQ_DURABLE, FAR_FUTURE)
        await client.startup()
        kick: AsyncKicker[..., Any] = AsyncKicker(task_name="add", broker=client, labels={})
        t0 = time.perf_counter()
        for i in range(n):
            await kick.kiq(i=i, a=i, b=1)
        out = {"taskiq_enqueue": n / (time.perf_counter() - t0)}
        workers = _taskiq_workers(ctx.url, marks, ctx, batch=100)
        try:
            await _ready_workers(js, workers, ctx)
            meter = CpuMeter([psutil.Process(workers.pid), *psutil.Process(workers.pid).children()], ctx.server_pid)
            await js.resume_consumer(peer.TASKIQ_STREAM, peer.TASKIQ_DURABLE)
            await _until(lambda: marks.span(n)[2] >= n, max(60.0, n / 200), f"{n} taskiq jobs")
            first, last, _ = marks.span(n)
            out["taskiq_drain"] = n / (last - first)
            out.update(meter.per_job("taskiq", n))
            out["taskiq_rss_mb"] = _tree_rss_mb(workers)
        finally:
            _stop(workers)
        workers = _taskiq_workers(ctx.url, marks, ctx, batch=1)
        try:
            await _ready_workers(js, workers, ctx)
            out.update(_latency("taskiq", await _start_latency(marks, ctx.size.latency_samples, n,
                                                              lambda i: kick.kiq(i=i, a=i, b=1), _ended(marks))))
        finally:
            _stop(workers)
    finally:
        await client.shutdown()
        await nc.close()
    return out


# --- corral -----------------------------------------------------------------------------------

async def run_corral(ctx: Context, marks: peer.Marks) -> dict[str, float]:
    n = ctx.size.messages
    await provision_for_bench(ctx.url)
    nc = await nats.connect(ctx.url)
    js = nc.jetstream()
    os.environ[peer.MARKS_ENV] = marks.name  # the bots inherit it
    try:
        await pause_jobs(js)
        t0 = time.perf_counter()
        summary = await submit_many(js, _jobs(n, ctx.rep))
        raise_for(summary)
        if summary.duplicates:
            raise CorralError(f"compare: {summary.duplicates} of {n} jobs were refused as duplicates of an earlier run")
        out = {"corral_enqueue": n / (time.perf_counter() - t0)}
        names = [f"cmp{ctx.rep}-{i}" for i in range(WORKERS)]
        with Fleet(ctx.url, ctx.log_dir, names, "--handler", "add=corral.bench.peer:corral_add") as fleet:
            await fleet.wait_ready()
            meter = CpuMeter([b.ps for b in fleet.bots], ctx.server_pid)
            await resume_jobs(js)
            state = await wait_for_messages(nc, RESULTS_STREAM, n, timeout=max(60.0, n / 100))
            first, last, _ = marks.span(n)
            out["corral_drain"] = n / (max(parse_ts(state["last_ts"]), last) - first)
            out.update(meter.per_job("corral", n))
            out["corral_rss_mb"] = sum(b.rss() for b in fleet.bots) / len(fleet.bots) / 2**20
            out.update(_latency("corral", await _start_latency(
                marks, ctx.size.latency_samples, n,
                lambda i: submit(js, make_job("add", {"i": i, "a": i, "b": 1}, id=_job_id(ctx.rep, i))),
                lambda i: _stored(js, _job_id(ctx.rep, i)))))
    finally:
        await nc.close()
    return out


async def run(ctx: Context) -> dict[str, float]:
    try:
        import taskiq_nats  # noqa: F401
    except ImportError as e:
        raise ConfigError("compare needs taskiq-nats: pip install -e '.[bench]'") from e
    slots = ctx.size.messages + ctx.size.latency_samples
    out: dict[str, float] = {"raw_drain": (await raw.drain_baseline(ctx.url, ctx.size.messages)).rate}
    marks = peer.Marks(n=slots)
    try:
        out.update(await run_taskiq(ctx, marks))
        marks.reset()
        out.update(await run_corral(ctx, marks))
    finally:
        marks.close()
    out["ratio_corral_taskiq"] = out["corral_drain"] / out["taskiq_drain"]
    out["ratio_corral_raw"] = out["corral_drain"] / out["raw_drain"]
    out["ratio_enqueue"] = out["corral_enqueue"] / out["taskiq_enqueue"]
    out["ratio_start_p50"] = out["corral_start_p50_ms"] / out["taskiq_start_p50_ms"]
    out["ratio_start_p99"] = out["corral_start_p99_ms"] / out["taskiq_start_p99_ms"]
    return out


METRICS = (
    Metric("raw_drain", "msg/s", "raw nats-py drain (4 procs, fetch 100, plain ack)"),
    Metric("taskiq_drain", "jobs/s", "taskiq-nats drain (4 procs, batch 100, no result kept)"),
    Metric("corral_drain", "jobs/s", "corral drain (4 bots, fenced durable results)"),
    Metric("ratio_corral_taskiq", "x", "corral / taskiq-nats drain"),
    Metric("ratio_corral_raw", "x", "corral / raw drain"),
    Metric("taskiq_enqueue", "jobs/s", "taskiq-nats enqueue (kiq, awaited)"),
    Metric("corral_enqueue", "jobs/s", "corral enqueue (submit_many)"),
    Metric("ratio_enqueue", "x", "corral / taskiq-nats enqueue"),
    Metric("taskiq_start_p50_ms", "ms", "taskiq-nats light-load enqueue-to-start p50"),
    Metric("taskiq_start_p99_ms", "ms", "taskiq-nats light-load enqueue-to-start p99"),
    Metric("corral_start_p50_ms", "ms", "corral light-load enqueue-to-start p50"),
    Metric("corral_start_p99_ms", "ms", "corral light-load enqueue-to-start p99"),
    Metric("ratio_start_p50", "x", "corral / taskiq-nats start p50"),
    Metric("ratio_start_p99", "x", "corral / taskiq-nats start p99"),
    Metric("taskiq_cpu_us_per_job", "us", "taskiq-nats workers' CPU per job (all 4, over the drain)"),
    Metric("taskiq_server_cpu_us_per_job", "us", "nats-server CPU per job during the taskiq-nats drain"),
    Metric("corral_cpu_us_per_job", "us", "corral bots' CPU per job (all 4, over the drain)"),
    Metric("corral_server_cpu_us_per_job", "us", "nats-server CPU per job during the corral drain"),
    Metric("taskiq_rss_mb", "MB", "taskiq-nats worker RSS (mean of 4)"),
    Metric("corral_rss_mb", "MB", "corral bot RSS (mean of 4)"),
)


def cross_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets that compare two records: corral as shipped against taskiq on a lazy server."""
    by_sync = {r["sync"]: r["metrics"] for r in records if r["scenario"] == "compare"}
    if "always" not in by_sync or "2m" not in by_sync:
        return []
    shipped, lazy = by_sync["always"]["corral_drain"]["median"], by_sync["2m"]["taskiq_drain"]["median"]
    value = shipped / lazy
    return [{"target": "corral as shipped (always) >= 1.0x taskiq-nats on a lazy server", "metric": "corral_drain",
             "value": value, "bound": 1.0, "op": ">=", "met": value >= 1.0, "by": value - 1.0}]


SCENARIO = Scenario(
    name="compare",
    summary="corral beside raw nats-py and taskiq-nats: same server, no-op jobs, 4 processes",
    run=run,
    metrics=METRICS,
    params=lambda size: {"jobs": size.messages, "latency_samples": size.latency_samples, "workers": WORKERS},
)
