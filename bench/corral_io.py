"""Reading what corral recorded, for timing: stream state, first claim, results as they land."""

from __future__ import annotations

import datetime as dt
import time

import anyio
import msgspec
import nats.js.errors
from nats.aio.client import Client as NATS

from corral.core.jsapi import api
from corral.core.errors import CorralError
from corral.core.history import walk
from corral.core.messages import EventType, event_decoder, result_decoder
from corral.core.names import EVENTS_STREAM, JOBS_STREAM, RESULTS_STREAM, RESULTS_SUBJECT, consumer_name, job_events_subject, stream_op

FAR_FUTURE = "2099-01-01T00:00:00Z"


def parse_ts(text: str) -> float:
    """Unix seconds from the server's RFC 3339 timestamps (nanosecond fractions truncated to micro)."""
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp()
    return stamp + (float(f"0.{frac[:9]}") if frac else 0.0)


async def stream_state(nc: NATS, stream: str) -> dict:
    """The raw STREAM.INFO state (``messages``, ``last_ts``...)."""
    return (await api(nc, stream_op("INFO", stream)))["state"]


async def wait_for_messages(nc: NATS, stream: str, count: int, timeout: float, poll: float = 0.1) -> dict:
    """Poll until ``stream`` holds at least ``count`` messages; returns its state.

    Raises:
        CorralError: not reached within ``timeout`` seconds (the count reached is quoted).
    """
    deadline = time.monotonic() + timeout
    while True:
        state = await stream_state(nc, stream)
        if state["messages"] >= count:
            return state
        if time.monotonic() > deadline:
            raise CorralError(f"{stream} holds {state['messages']} of {count} messages after {timeout}s")
        await anyio.sleep(poll)


async def first_claim(js, scan: int = 200) -> float:
    """Earliest start among the first ``scan`` STARTED events and results (both streams emptied beforehand)."""
    times, seq = [], 1
    for _ in range(scan):
        try:
            msg = await js.get_msg(EVENTS_STREAM, seq=seq, subject=job_events_subject("*"), next=True, direct=True)
        except nats.js.errors.NotFoundError:
            break
        seq = msg.seq + 1
        try:
            event = event_decoder.decode(msg.data or b"")
        except msgspec.DecodeError:
            continue
        if event.type == EventType.STARTED:
            times.append(event.ts)
    # A first delivery that succeeds records no STARTED (core/timeline.py): its result has the start.
    async for msg in walk(js, RESULTS_STREAM, RESULTS_SUBJECT, limit=scan):
        times.append(result_decoder.decode(msg.data or b"").started_at)
    if not times:
        raise CorralError("no STARTED event or result recorded")
    return min(times)


async def pause_jobs(js, queue: str = "default") -> None:
    """Hold the job consumer so a backlog can be built and every bot made ready before the clock starts."""
    await js.pause_consumer(JOBS_STREAM, consumer_name(queue), FAR_FUTURE)


async def resume_jobs(js, queue: str = "default") -> None:
    await js.resume_consumer(JOBS_STREAM, consumer_name(queue))
