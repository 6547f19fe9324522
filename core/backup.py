"""Backup and restore of corral's streams: configs, consumers and every message.

A backup folder holds, per stream, ``config.json`` (the raw StreamConfig),
``consumers.json`` (raw ConsumerConfigs) and ``messages.ndjson`` (subject,
headers, base64 data, original sequence and time, one message per line), plus
``manifest.json`` with counts. It is read with direct gets, so it needs no
consumer and moves no consumer's position.

Restore recreates each stream from its config and republishes its messages
in order, then recreates the consumers. What changes: sequence numbers and
server timestamps are new (every payload carries its own times: a job's
``created_at``, an event's ``ts``); consumers start from the beginning, which
for the jobs stream is right because only unfinished jobs are written: the
stream has limits retention and keeps acked jobs until the purger removes them,
so messages below their subject's keep point (core/purge.py) are left out. An
acked job above the ack floor (acks out of order) is still written; after a
restore its redelivery finds the result and is acked without running. The bot
liveness bucket is not backed up: it is rebuilt within seconds by live bots;
restore creates it (and any other declared resource still missing) from
streams/ at the end. Schedules keep their definitions (not past firings), limits
their definitions (not the leased slots and rate counters), and fan-in groups
every member outcome, so a workflow half-way through goes on after a restore.

Why not the JetStream snapshot API: it is per stream, chunked with flow
control, and restores into a stream of the same name only when that stream is
absent; the portable format here can be read by any tool and restored into a
differently configured deployment (a cluster, say) after editing config.json.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from nats.aio.client import Client as NATS

from corral.core.connect import publish_error
from corral.core.jsapi import api
from corral.core.errors import ConfigError, MissingResourceError
from corral.core.history import walk
from corral.core.purge import consumer_floors, keep_points
from corral.core.names import (
    BATCH_HEADERS,
    DLQ_STREAM, EVENTS_STREAM, FLEET_STREAM, GROUPS_BUCKET, JOBS_STREAM, LIMITS_BUCKET, RESULTS_STREAM, SCHEDULES_STREAM,
    consumer_op, kv_stream, kv_subject, schedule_subject, stream_op,
)

#: Streams that hold state worth keeping, in restore order (schedules before the jobs stream that
#: sources them; the jobs' consumers last).
BACKED_UP = (RESULTS_STREAM, EVENTS_STREAM, DLQ_STREAM, FLEET_STREAM, kv_stream(GROUPS_BUCKET), kv_stream(LIMITS_BUCKET),
             SCHEDULES_STREAM, JOBS_STREAM)
#: What of a stream is kept, where not everything: schedule definitions but not their past firings
#: (already sourced into the jobs stream; restoring them would run them again under new ids), and
#: limit definitions but not the leased slots and rate counters, which are live state with TTLs.
KEPT_SUBJECTS = {SCHEDULES_STREAM: schedule_subject("*"), kv_stream(LIMITS_BUCKET): kv_subject(LIMITS_BUCKET, "def.*")}
#: Headers a direct get adds, and the atomic-batch headers a result was committed with: replayed, those
#: would open batches that are never committed, and the server would store none of their messages.
_SKIP_HEADERS = {"Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Stream", "Nats-Last-Sequence", "Nats-Num-Pending",
                 *BATCH_HEADERS}


@dataclass(frozen=True)
class StreamBackup:
    stream: str
    messages: int
    consumers: int


async def backup(nc: NATS, folder: Path, progress: Callable[[str, int], None] = lambda s, n: None) -> list[StreamBackup]:
    """Write every backed-up stream that exists into ``folder`` (created; must be empty)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty: back up into a new folder")
    js = nc.jetstream()
    out = []
    for stream in BACKED_UP:
        try:
            info = await api(nc, stream_op("INFO", stream))
        except MissingResourceError:
            continue
        target = folder / stream
        target.mkdir(parents=True)
        (target / "config.json").write_text(json.dumps(info["config"], indent=2))
        consumers = (await api(nc, consumer_op("LIST", stream), {})).get("consumers") or []
        (target / "consumers.json").write_text(json.dumps([c["config"] for c in consumers], indent=2))
        n = 0
        keep = keep_points(await consumer_floors(nc)) if stream == JOBS_STREAM else {}
        async with await anyio.open_file(target / "messages.ndjson", "w") as f:
            async for msg in walk(js, stream, KEPT_SUBJECTS.get(stream, ">")):
                if (msg.seq or 0) < keep.get(msg.subject or "", 0):
                    continue  # consumed: acked, waiting for the purge
                headers = {k: v for k, v in (msg.headers or {}).items() if k not in _SKIP_HEADERS}
                await f.write(json.dumps({
                    "seq": msg.seq, "subject": msg.subject, "time": msg.time.isoformat() if msg.time else None,
                    "headers": headers or None, "data": base64.b64encode(msg.data or b"").decode(),
                }) + "\n")
                n += 1
                if n % 500 == 0:
                    progress(stream, n)
        progress(stream, n)
        out.append(StreamBackup(stream, n, len(consumers)))
    (folder / "manifest.json").write_text(json.dumps({
        "created_at": time.time(), "streams": {b.stream: {"messages": b.messages, "consumers": b.consumers} for b in out},
    }, indent=2))
    return out


async def restore(nc: NATS, folder: Path, progress: Callable[[str, int], None] = lambda s, n: None) -> list[StreamBackup]:
    """Recreate streams, messages and consumers from ``folder``.

    Resources the backup does not hold (the liveness bucket) are left to the caller:
    :func:`corral.streams.provision.create_missing` creates them (the client library does
    not depend on the declarations).

    Raises:
        ConfigError: not a backup folder, or a stream to restore already holds messages.
    """
    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        raise ConfigError(f"{folder} has no manifest.json: not a corral backup")
    js = nc.jetstream()
    out = []
    for stream in BACKED_UP:
        source = folder / stream
        if not source.exists():
            continue
        config = json.loads((source / "config.json").read_text())
        try:
            live = await api(nc, stream_op("INFO", stream))
            if live["state"]["messages"]:
                raise ConfigError(f"stream {stream} already holds {live['state']['messages']} messages: restore into an empty deployment")
            await api(nc, stream_op("DELETE", stream))
        except MissingResourceError:
            pass
        await api(nc, stream_op("CREATE", stream), config)
        n = 0
        async with await anyio.open_file(source / "messages.ndjson") as f:
            async for line in f:
                rec = json.loads(line)
                try:
                    await js.publish(rec["subject"], base64.b64decode(rec["data"]), headers=rec["headers"], timeout=10)
                except Exception as e:  # translated once, here
                    raise publish_error(e, rec["subject"]) from e
                n += 1
                if n % 500 == 0:
                    progress(stream, n)
        consumers = json.loads((source / "consumers.json").read_text())
        for c in consumers:
            name = c.get("durable_name") or c.get("name")
            await api(nc, consumer_op("CREATE", stream, name), {"stream_name": stream, "config": c, "action": "create"})
        progress(stream, n)
        out.append(StreamBackup(stream, n, len(consumers)))
    return out
