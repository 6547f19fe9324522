"""The dashboard's NATS reads: each function is the body of one long-lived worker.

They post :mod:`corral.tui.messages` through ``post`` and never touch widgets. None of
them catches broadly: a failure ends the worker, the app's
``@on(Worker.StateChanged)`` records it, and the app's clock restarts the feed
while the connection is up. The bots feed is a :class:`corral.core.watch.KVWatch`, which
the app restarts on every reconnect (docs/nats-notes.md#kv-watches-across-reconnects).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from textual.message import Message

from corral.core.dlq import list_dead
from corral.core.fleet import fleet_status
from corral.core.history import walk
from corral.core.leases import is_gone
from corral.core.log import Logger
from corral.core.messages import Event, event_decoder, heartbeat_decoder, result_decoder
from corral.core.logship import decode_line, recent_lines
from corral.core.names import (
    BOTS_BUCKET, EVENTS_STREAM, EVENTS_SUBJECT, LOGS_SUBJECT, RESULTS_PREFIX, RESULTS_STREAM, job_events_subject,
)
from corral.core.status import snapshot
from corral.core.timeline import implied_by
from corral.core.watch import KVWatch
from corral.tui.features import FeaturesReader
from corral.tui.fleet_slots import read_slots
from corral.tui.messages import (
    BotBeat, BotGone, DeadLettersLoaded, EventArrived, FeaturesLoaded, FleetLoaded, LogArrived, SnapshotTaken,
)

Post = Callable[[Message], object]

BACKFILL = 300  #: events read back from the stream when the tail starts
LOG_BACKFILL = 300  #: log lines read back when the tail starts
DEAD_CAP = 500  #: dead letters listed at most
#: Every result, whatever the layout under the prefix (one token per job, or job and bot).
ALL_RESULTS = f"{RESULTS_PREFIX}>"


async def take_snapshot(js: JetStreamContext, post: Post) -> None:
    at = time.time()
    post(SnapshotTaken(await snapshot(js), at))


def watch_bots(js: JetStreamContext, post: Post, log: Logger) -> KVWatch:
    """A watch of the liveness bucket: every write is a heartbeat, DEL/PURGE (or an empty value) a departure.

    The app runs it as the ``bots`` feed and restarts it from its reconnect message.
    """

    def entry(e: KeyValue.Entry) -> None:
        if is_gone(e) or not e.value:
            post(BotGone(e.key, e.operation or "PURGE"))
            return
        try:
            post(BotBeat(heartbeat_decoder.decode(e.value)))
        except msgspec.DecodeError:
            pass  # not a heartbeat: someone else's key

    return KVWatch(js, BOTS_BUCKET, ">", entry, log)


async def tail_events(nc: NATS, js: JetStreamContext, post: Post) -> None:
    """Live events and results on core NATS (resubscribed by nats-py on reconnect), plus the last ones stored.

    A first delivery's success writes no event: its result stands for ``started`` and
    ``succeeded`` (core/timeline.py), so results are followed too and posted as those two.
    Subscribing first and reading back second leaves no gap; the store drops the overlap.
    """

    def deliver(subject: str, data: bytes) -> None:
        try:
            post(EventArrived(subject, event_decoder.decode(data)))
        except msgspec.DecodeError:
            pass  # not an Event: ignore, the tail shows corral's vocabulary only

    def deliver_result(data: bytes) -> None:
        for event in _implied(data):
            post(EventArrived(job_events_subject(event.job_id or ""), event))

    async def on_msg(msg) -> None:
        deliver(msg.subject, msg.data)

    async def on_result(msg) -> None:
        deliver_result(msg.data)

    subs = [await nc.subscribe(EVENTS_SUBJECT, cb=on_msg), await nc.subscribe(ALL_RESULTS, cb=on_result)]
    try:
        for subject, event in await _backfill(js):
            post(EventArrived(subject, event))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except nats.errors.Error:
                    pass  # connection closed: the subscription is gone with it


def _implied(data: bytes) -> list[Event]:
    try:
        return implied_by(result_decoder.decode(data))
    except msgspec.DecodeError:
        return []  # not a JobResult


async def _backfill(js: JetStreamContext) -> list[tuple[str, Event]]:
    """The last stored events and the entries the last results imply, in time order (subject, event)."""
    out: list[tuple[str, Event]] = []
    for stream, subject in ((EVENTS_STREAM, EVENTS_SUBJECT), (RESULTS_STREAM, ALL_RESULTS)):
        info = await js.stream_info(stream)
        start = max(info.state.last_seq - BACKFILL + 1, 1)
        async for msg in walk(js, stream, subject, start_seq=start, limit=BACKFILL):
            if stream == RESULTS_STREAM:
                out.extend((job_events_subject(e.job_id or ""), e) for e in _implied(msg.data or b""))
                continue
            try:
                out.append((msg.subject or "", event_decoder.decode(msg.data or b"")))
            except msgspec.DecodeError:
                continue
    out.sort(key=lambda pair: pair[1].ts)
    return out[-BACKFILL:]


async def tail_logs(nc: NATS, js: JetStreamContext, post: Post) -> None:
    """Live log lines on core NATS, after the last ones stored (subscribed first: the overlap is at most a few lines)."""
    async def on_msg(msg) -> None:
        if (line := decode_line(msg.subject, msg.data)) is not None:
            post(LogArrived(line))

    sub = await nc.subscribe(LOGS_SUBJECT, cb=on_msg)
    try:
        for line in await recent_lines(js, limit=LOG_BACKFILL):
            post(LogArrived(line))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # connection closed: the subscription is gone with it


async def load_dead(js: JetStreamContext, post: Post) -> None:
    post(DeadLettersLoaded(await list_dead(js, limit=DEAD_CAP)))


async def load_fleet(js: JetStreamContext, post: Post) -> None:
    at = time.time()
    post(FleetLoaded(await fleet_status(js), at, await read_slots(js)))


async def load_features(js: JetStreamContext, reader: FeaturesReader, post: Post) -> None:
    at = time.time()
    post(FeaturesLoaded(await reader.read(js), at))


def read_varz(monitor_url: str, timeout: float = 2.0) -> dict | None:
    """The server's ``/varz``, or None if the monitoring port does not answer (runs in a thread)."""
    try:
        with urllib.request.urlopen(f"{monitor_url.rstrip('/')}/varz", timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
