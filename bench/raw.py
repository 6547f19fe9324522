"""The limit: what plain nats-py does on this box, with no corral code in the path.

Every ratio in docs/performance.md divides a corral figure by one of these,
measured on the same server in the same repetition.

* :func:`publish_pipelined` - ``js.publish_async`` with nats-py's 4000 in flight.
* :func:`drain` - N processes sharing one durable pull consumer, fetch batch
  100, plain ``ack()`` (fire and forget) or ``ack_sync()`` one at a time.
* :func:`publish_to_fetch` - light load: one message at a time, a fetch
  already waiting, from the publish call to the message in hand.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

ROOT = Path(__file__).resolve().parent.parent  #: so `-m corral.bench.drainer` resolves without an install
STREAM = "BENCH_LIMIT"
SUBJECT = "bench.limit.work"
DURABLE = "drain"
PAYLOAD = b"x" * 117  #: the reference message size of docs/nats-notes.md#the-cost-of-an-ack
FETCH_BATCH = 100  #: as corral.bench.drainer fetches


async def drain_baseline(url: str, count: int, processes: int = 4, mode: str = "ack") -> DrainResult:
    """Publish ``count`` messages to a fresh stream and drain them (the limit's drain, reusable)."""
    import anyio

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await reset_stream(js)
        await publish_pipelined(js, count)
    finally:
        await nc.close()
    return await anyio.to_thread.run_sync(drain, url, processes, mode, count)


async def reset_stream(js) -> None:
    """(Re)create the file-backed work-queue stream and its durable pull consumer, empty."""
    try:
        await js.delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>", SUBJECT], retention=RetentionPolicy.WORK_QUEUE,
                                     storage=StorageType.FILE))
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                                                 max_ack_pending=20_000, max_waiting=512))


async def publish_pipelined(js, count: int, payload: bytes = PAYLOAD) -> float:
    """Publish ``count`` messages pipelined; returns messages per second until the last ack."""
    start = time.perf_counter()
    futures = [await js.publish_async(SUBJECT, payload) for _ in range(count)]
    await asyncio.wait_for(js.publish_async_completed(), timeout=60)
    elapsed = time.perf_counter() - start
    failed = sum(1 for f in futures if f.exception() is not None)
    if failed:
        raise RuntimeError(f"{failed} of {count} pipelined publishes failed")
    return count / elapsed


async def _fetch_one(sub: JetStreamContext.PullSubscription, got: asyncio.Future[float]) -> None:
    """Fetch one message, resolving ``got`` with the time it arrived."""
    msgs = await sub.fetch(1, timeout=5)  # batch 1: a larger one would leave its pull open
    got.set_result(time.perf_counter())
    for m in msgs:
        await m.ack()


async def publish_to_fetch(url: str, samples: int) -> list[float]:
    """Seconds from publish to message in hand, one message at a time with a fetch waiting."""
    pub_nc, sub_nc = await nats.connect(url), await nats.connect(url)
    try:
        js = pub_nc.jetstream()
        sub = await sub_nc.jetstream().pull_subscribe_bind(durable=DURABLE, stream=STREAM)
        out = []
        for _ in range(samples):
            got: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(_fetch_one(sub, got))
            await asyncio.sleep(0)  # let the task send its pull request
            await sub_nc.flush()  # ...and the server see it, so the fetch is waiting, as a bot's would be
            start = time.perf_counter()
            await js.publish(SUBJECT, PAYLOAD)
            out.append(await got - start)
            await task
        return out
    finally:
        await pub_nc.close()
        await sub_nc.close()


@dataclass(frozen=True)
class DrainResult:
    messages: int
    rate: float  #: messages per second, from the go signal to the last ack
    seconds: float


def drain(url: str, processes: int, mode: str, expected: int) -> DrainResult:
    """Drain the stream with ``processes`` processes (``mode`` "ack" or "ack_sync"); blocking.

    The processes (:mod:`corral.bench.drainer`) connect and bind first; the clock
    starts when all are waiting and stops at the last ack any of them sent.

    Raises:
        RuntimeError: one failed, or they did not receive exactly ``expected`` messages.
    """
    procs = [subprocess.Popen([sys.executable, "-m", "corral.bench.drainer", url, mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(processes)]
    try:
        for p in procs:
            _expect_line(p, "ready")
        start = time.time()
        for p in procs:
            assert p.stdin is not None  # Popen(stdin=PIPE)
            p.stdin.write("go\n")
            p.stdin.flush()
        done = [_expect_line(p, "").split() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    total = sum(int(n) for n, _ in done)
    if total != expected:
        raise RuntimeError(f"drained {total} messages, expected {expected}")
    seconds = max(float(t) for _, t in done) - start
    return DrainResult(total, total / seconds, seconds)


def _expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None  # Popen(stdout=PIPE)
    line = proc.stdout.readline().strip()
    if not line.startswith(prefix) or line.startswith("error") or not line:
        raise RuntimeError(f"drainer said {line!r} (exit {proc.poll()})")
    return line
