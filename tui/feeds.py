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
from corral.core.messages import event_decoder, heartbeat_decoder
from corral.core.logship import decode_line, recent_lines
from corral.core.names import BOTS_BUCKET, EVENTS_STREAM, EVENTS_SUBJECT, LOGS_SUBJECT
from corral.core.status import snapshot
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
    """Live events on core NATS (resubscribed by nats-py on reconnect), plus the last ones stored.

    Subscribing first and reading back second leaves no gap; the store drops the overlap.
    """

    def deliver(subject: str, data: bytes) -> None:
        try:
            post(EventArrived(subject, event_decoder.decode(data)))
        except msgspec.DecodeError:
            pass  # not an Event: ignore, the tail shows corral's vocabulary only

    async def on_msg(msg) -> None:
        deliver(msg.subject, msg.data)

    sub = await nc.subscribe(EVENTS_SUBJECT, cb=on_msg)
    try:
        info = await js.stream_info(EVENTS_STREAM)
        start = max(info.state.last_seq - BACKFILL + 1, 1)
        async for msg in walk(js, EVENTS_STREAM, EVENTS_SUBJECT, start_seq=start, limit=BACKFILL):
            deliver(msg.subject or "", msg.data or b"")
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # connection closed: the subscription is gone with it


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
