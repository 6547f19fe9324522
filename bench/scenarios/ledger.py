"""ledger: how fast `corral ledger` ingests, how far it lags, its and the fleet supervisor's RSS, report times.

Part 1, live: a real `corral ledger --db` process and a real `corral fleet
--host benchN --count 4` supervisor (so 4 real bots) are started with the job
consumer paused and ``ledger_jobs`` `sum` jobs pending; once the 4 bots are
live the consumer is resumed. Every 0.25 s the ledger's lag is read as the
messages pending on its durable consumers (``num_pending + num_ack_pending``
of ``ledger-results`` and ``ledger-events``). The ingest rate is the rows the
ledger holds at the end (results + events) over resume-to-caught-up. The
ledger's and the supervisor's RSS are sampled every 0.1 s (the supervisor
alone, not its bots).

Part 2, reports: synthetic results (and one SUCCEEDED event each, so the
event-based reports have rows too) are published pipelined with
:class:`corral.core.publisher.AsyncPublisher` until the ledger holds
``report_results`` results; once it caught up, every canned report in
``corral.ledger.reports.REPORTS`` is run once through ``corral.ledger.client.ask``
(1,000 rows at most, as `corral report` asks) and timed. The ledger runs with
``--query-timeout 300`` so a slow report is measured, not cut off at the
shipped 10 s; the docs compare against the shipped value.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import anyio
import msgspec
import psutil

from corral.bench.corral_io import pause_jobs, resume_jobs, stream_state
from corral.bench.scenarios import Context, Metric, Scenario
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.ledger.client import ask
from corral.core.names import LEDGER_CONSUMERS as CONSUMERS
from corral.ledger.reports import REPORTS
from corral.core.log import get_logger
from corral.core.messages import Event, EventType, JobResult, new_id
from corral.core.names import EVENTS_STREAM, RESULTS_STREAM, job_events_subject, result_fence, result_subject
from corral.core.publisher import AsyncPublisher
from corral.core.settings import Settings
from corral.core.spawn import spawn_corral
from corral.core.status import live_bots
from corral.core.submit import raise_for, submit_many
from corral.core.handlers import generate

MB = 1024 * 1024
FLEET_BOTS = 4
QUERY_TIMEOUT = 300.0
SHIPPED_QUERY_TIMEOUT = 10.0


class Proc:
    """A corral subprocess with its log in a file; RSS sampled by :meth:`sample`."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name, self.log_path = name, log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = spawn_corral(*args, log=log)
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0

    def sample(self) -> int:
        try:
            rss = self.ps.memory_info().rss
        except psutil.Error:
            return 0
        self.peak = max(self.peak, rss)
        return rss

    async def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CorralError(f"{self.name} did not log {text!r}:\n{self.log_path.read_text(errors='replace')[-1500:]}")
            await anyio.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def ledger_lag(js) -> int:
    """Messages the ledger has not yet committed and acked, over its results and events consumers."""
    lag = 0
    for stream in (RESULTS_STREAM, EVENTS_STREAM):
        info = await js.consumer_info(stream, CONSUMERS[stream])
        lag += info.num_pending + info.num_ack_pending
    return lag


async def ledger_rows(nc) -> tuple[int, int]:
    reply = await ask(nc, "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM events)", timeout=60)
    results, events = reply.rows[0]
    return int(results), int(events)


async def publish_synthetic(js, count: int) -> float:
    """Publish ``count`` results plus one SUCCEEDED event each; returns messages/s (acks included)."""
    pub = AsyncPublisher(js, get_logger("bench"), ack_timeout=60.0)
    kinds, bots = ("sum", "echo", "sleep", "render"), [f"synth-{i}" for i in range(8)]
    encode = msgspec.json.encode
    futures = []
    t0, now = time.perf_counter(), time.time() - count / 1000  # spread over the last count/1000 seconds
    for i in range(count):
        job_id, kind, bot = new_id(), kinds[i % 4], bots[i % 8]
        started = now + i / 1000
        finished = started + random.expovariate(1 / 0.02)
        result = JobResult(job_id=job_id, kind=kind, queue="default", bot=bot, incarnation="bench", attempt=1,
                           started_at=started, finished_at=finished, value=i)
        event = Event(type=EventType.SUCCEEDED, ts=finished, job_id=job_id, bot=bot, incarnation="bench", attempt=1,
                      kind=kind, queue="default", duration=finished - started)
        futures.append(await pub.publish(result_subject(job_id, bot), encode(result), result_fence(job_id)))
        futures.append(await pub.publish(job_events_subject(job_id), encode(event)))
        if len(futures) >= 20_000:
            await _settle(futures)
    await _settle(futures)
    return 2 * count / (time.perf_counter() - t0)


async def _settle(futures: list) -> None:
    for f in futures:
        await f  # raises the refusal or the missing ack
    futures.clear()


async def caught_up(js, timeout: float, on_poll=lambda lag: None) -> float:
    """Wait until the ledger's lag is 0; returns when (monotonic)."""
    with anyio.fail_after(timeout):
        while (lag := await ledger_lag(js)) > 0:
            on_poll(lag)
            await anyio.sleep(0.25)
    return time.monotonic()


async def run(ctx: Context) -> dict[str, float]:
    n, target = ctx.size.ledger_jobs, ctx.size.report_results
    host = f"bench{ctx.rep}"
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    ledger = Proc("ledger", ["ledger", "--server", ctx.url, "--db", str(ctx.log_dir / "ledger.duckdb"),
                             "--query-timeout", str(QUERY_TIMEOUT)], ctx.log_dir)
    fleet: Proc | None = None
    out: dict[str, float] = {}
    try:
        js = nc.jetstream()
        await ledger.wait_log("event=ledger.ready")
        await pause_jobs(js)
        raise_for(await submit_many(js, generate("sum", n, "default")))
        (ctx.log_dir / "fleet").mkdir(exist_ok=True)
        fleet = Proc("fleet", ["fleet", "--server", ctx.url, "--host", host, "--count", str(FLEET_BOTS),
                               "--log-dir", str(ctx.log_dir / "fleet")], ctx.log_dir)
        with anyio.fail_after(60):
            while sum(b.name.startswith(f"{host}-") for b in await live_bots(js)) < FLEET_BOTS:  # noqa: ASYNC110 - polls the bots' KV
                await anyio.sleep(0.2)
        fleet_idle = fleet.sample()
        # The ledger has ingested the bots' start-up events; count only what the drain adds.
        await caught_up(js, 60)
        results0, events0 = await ledger_rows(nc)

        async with anyio.create_task_group() as tg:
            async def sampler() -> None:
                while True:
                    ledger.sample(), fleet.sample()
                    await anyio.sleep(0.1)

            tg.start_soon(sampler)
            max_lag = 0

            def seen(lag: int) -> None:
                nonlocal max_lag
                max_lag = max(max_lag, lag)

            await resume_jobs(js)
            t0 = time.monotonic()
            with anyio.fail_after(max(120.0, n / 10)):
                while (await stream_state(nc, RESULTS_STREAM))["messages"] < n:
                    seen(await ledger_lag(js))
                    await anyio.sleep(0.25)
            drained = time.monotonic()
            lag_at_drained = await ledger_lag(js)
            seen(lag_at_drained)
            done = await caught_up(js, max(120.0, n / 10), seen)
            tg.cancel_scope.cancel()
        results1, events1 = await ledger_rows(nc)
        rows = (results1 - results0) + (events1 - events0)
        out.update({
            "drain_jobs_per_s": n / (drained - t0),
            "ingest_rows_per_s": rows / (done - t0),
            "ingest_rows": rows,
            "max_lag_msgs": max_lag,
            "lag_at_drained_msgs": lag_at_drained,
            "catch_up_after_drain_s": done - drained,
            "ledger_peak_rss_mb": ledger.peak / MB,
            "fleet_idle_rss_mb": fleet_idle / MB,
            "fleet_peak_rss_mb": fleet.peak / MB,
        })
        await anyio.to_thread.run_sync(fleet.stop)

        # Part 2: top the ledger up with synthetic results, then time the reports.
        extra = max(0, target - results1)
        t1 = time.monotonic()
        async with anyio.create_task_group() as tg:
            async def sample_ledger() -> None:
                while True:
                    ledger.sample()
                    await anyio.sleep(0.2)

            tg.start_soon(sample_ledger)
            out["synthetic_publish_msgs_per_s"] = await publish_synthetic(js, extra) if extra else 0.0
            bulk_done = await caught_up(js, max(300.0, extra / 100))
            tg.cancel_scope.cancel()
        results2, events2 = await ledger_rows(nc)
        out["bulk_ingest_rows_per_s"] = ((results2 - results1) + (events2 - events1)) / (bulk_done - t1)
        out["report_results"] = results2
        out["report_events"] = events2
        for name, report in REPORTS.items():
            t = time.perf_counter()
            await ask(nc, report.sql, max_rows=1000, timeout=QUERY_TIMEOUT + 10)
            out[f"report_{name}_ms"] = 1000 * (time.perf_counter() - t)
            ledger.sample()
        out["ledger_peak_rss_bulk_mb"] = ledger.peak / MB
        if not out["synthetic_publish_msgs_per_s"]:
            del out["synthetic_publish_msgs_per_s"]
    finally:
        if fleet is not None:
            await anyio.to_thread.run_sync(fleet.stop)
        await anyio.to_thread.run_sync(ledger.stop)
        await nc.close()
    return out


def _metrics() -> tuple[Metric, ...]:
    return (
        Metric("drain_jobs_per_s", "jobs/s", "4 fleet bots: resume to last result"),
        Metric("ingest_rows_per_s", "rows/s", "ledger rows (results + events): resume to caught up"),
        Metric("ingest_rows", "rows", "rows the drain added"),
        Metric("max_lag_msgs", "msgs", "max lag: pending on ledger-results + ledger-events"),
        Metric("lag_at_drained_msgs", "msgs", "lag when the last result was stored"),
        Metric("catch_up_after_drain_s", "s", "last result stored to ledger caught up"),
        Metric("ledger_peak_rss_mb", "MB", "ledger peak RSS during the drain"),
        Metric("fleet_idle_rss_mb", "MB", "fleet supervisor RSS, 4 bots idle"),
        Metric("fleet_peak_rss_mb", "MB", "fleet supervisor peak RSS during the drain"),
        Metric("synthetic_publish_msgs_per_s", "msg/s", "synthetic results + events published"),
        Metric("bulk_ingest_rows_per_s", "rows/s", "ledger rows: publish start to caught up"),
        Metric("report_results", "rows", "results the reports ran over"),
        Metric("report_events", "rows", "events the reports ran over"),
        *(Metric(f"report_{name}_ms", "ms", f"report {name}") for name in REPORTS),
        Metric("ledger_peak_rss_bulk_mb", "MB", "ledger peak RSS, whole run incl. bulk ingest and reports"),
    )


SCENARIO = Scenario(
    name="ledger",
    summary="ledger ingest rate and lag while 4 fleet bots drain sum jobs; supervisor and ledger RSS; report times",
    run=run,
    metrics=_metrics(),
    params=lambda size: {"jobs": size.ledger_jobs, "fleet_bots": FLEET_BOTS, "report_results": size.report_results,
                         "ledger_batch": 1000, "ledger_linger_ms": 200, "query_timeout_s": QUERY_TIMEOUT,
                         "shipped_query_timeout_s": SHIPPED_QUERY_TIMEOUT},
)
