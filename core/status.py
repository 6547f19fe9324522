"""A snapshot of the system for `corral status`, health checks and dashboards."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from corral.core.history import walk
from corral.core.leases import is_gone
from corral.core.messages import BotHeartbeat, heartbeat_decoder
from corral.core.names import BOTS_STREAM, DLQ_STREAM, bot_key_subject, EVENTS_STREAM, JOBS_STREAM, RESULTS_STREAM

STREAMS = (JOBS_STREAM, RESULTS_STREAM, EVENTS_STREAM, DLQ_STREAM, BOTS_STREAM)


@dataclass
class StreamStat:
    name: str
    messages: int
    bytes: int
    present: bool = True


@dataclass
class ConsumerStat:
    name: str
    pending: int
    in_flight: int
    redelivered: int
    waiting: int
    max_ack_pending: int
    paused: bool = False


@dataclass
class BotStat:
    name: str
    state: str
    host: str
    pid: int
    heartbeat_age: float
    current: int
    done: int
    failed: int
    version: str


@dataclass
class Snapshot:
    streams: list[StreamStat] = field(default_factory=list)
    consumers: list[ConsumerStat] = field(default_factory=list)
    bots: list[BotStat] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


async def live_bots(js: JetStreamContext) -> list[BotHeartbeat]:
    """Every bot whose liveness key is present (not deleted, not expired)."""
    bots = []
    async for msg in walk(js, BOTS_STREAM, bot_key_subject(">")):
        if is_gone(msg) or not msg.data:
            continue
        try:
            bots.append(heartbeat_decoder.decode(msg.data))
        except msgspec.DecodeError:
            continue
    return bots


async def snapshot(js: JetStreamContext) -> Snapshot:
    snap = Snapshot()
    for name in STREAMS:
        try:
            info = await js.stream_info(name)
            snap.streams.append(StreamStat(name, info.state.messages, info.state.bytes))
        except nats.js.errors.NotFoundError:
            snap.streams.append(StreamStat(name, 0, 0, present=False))
    try:
        for c in await js.consumers_info(JOBS_STREAM):
            snap.consumers.append(ConsumerStat(
                c.name, c.num_pending or 0, c.num_ack_pending or 0, c.num_redelivered or 0, c.num_waiting or 0,
                c.config.max_ack_pending or 0, bool(getattr(c, "paused", False)),
            ))
    except nats.js.errors.NotFoundError:
        pass
    now = time.time()
    for b in sorted(await live_bots(js), key=lambda b: b.name):
        snap.bots.append(BotStat(b.name, b.state, b.host, b.pid, round(now - b.heartbeat_at, 1), len(b.current), b.done, b.failed,
                                 b.version))
    return snap
