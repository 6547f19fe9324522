"""recovery: what a SIGKILLed bot costs - its job's delay, and how soon watchers see it dead.

1. Two bots (with ``--full-events``, so the first delivery's start is announced); a
   `sleep` job; the bot that logs STARTED for it is SIGKILLed at once. The server
   redelivers after the ack deadline and the other bot completes it. Reported: kill-to-restart, kill-to-result and
   delivery-to-restart (the last is the ack deadline as the server applies it).
2. One bot and a KV watcher on its liveness key; the bot is SIGKILLed.
   Reported: kill-to-tombstone as the watcher receives it (the server's TTL
   marker, a PURGE), and last-heartbeat-to-tombstone.

Full size uses the shipped deadlines (streams/: ack_wait 10 s; bot TTL
10 s); tiny shortens both to 1 s so CI finishes in seconds.
"""

from __future__ import annotations

import time

import anyio
import msgspec
from nats.js.kv import KeyValue

from corral.bench.fleet import Fleet
from corral.bench.scenarios import Context, Metric, Scenario
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.core.log import get_logger
from corral.core.messages import EventType, event_decoder, heartbeat_decoder, make_job
from corral.core.names import BOTS_BUCKET, job_events_subject, job_results_subject
from corral.core.settings import Settings
from corral.core.submit import submit
from corral.streams import load_declarations

NS = 1_000_000_000


def shipped_ack_wait() -> float:
    """The job consumer's ack deadline in streams/, in seconds."""
    consumer = next(d for d in load_declarations() if d.kind == "consumer")
    return consumer.config["ack_wait"] / NS


async def killed_mid_job(ctx: Context, nc, js, ack_wait: float) -> dict[str, float]:
    job = make_job("sleep", {"seconds": ctx.size.job_seconds})
    events = await nc.subscribe(job_events_subject(job.id))
    results = await nc.subscribe(job_results_subject(job.id))
    names = [f"rec{ctx.rep}-a", f"rec{ctx.rep}-b"]
    # --full-events: the victim is whichever bot starts the first delivery, which lean bots do not announce.
    with Fleet(ctx.url, ctx.log_dir, names, "--ttl", str(ctx.size.ttl), "--full-events") as fleet, \
            anyio.fail_after(ack_wait * 3 + 30):
        await fleet.wait_ready()
        await submit(js, job)
        first = await _next_started(events)
        fleet.by_name(first.bot).kill()
        killed = time.time()
        again = await _next_started(events)
        await results.next_msg(timeout=ack_wait * 3 + 30)
        done = time.time()
    if again.bot == first.bot:
        raise CorralError(f"the job restarted on the killed bot {first.bot}")
    return {"restarted_after_kill_s": again.ts - killed, "completed_after_kill_s": done - killed,
            "restarted_after_delivery_s": again.ts - first.ts}


async def _next_started(sub):
    while True:
        event = event_decoder.decode((await sub.next_msg(timeout=60)).data)
        if event.type == EventType.STARTED:
            return event


async def killed_bot_seen_dead(ctx: Context, js) -> dict[str, float]:
    name = f"rec{ctx.rep}-watched"
    kv: KeyValue = await js.key_value(BOTS_BUCKET)
    with Fleet(ctx.url, ctx.log_dir, [name], "--ttl", str(ctx.size.ttl)) as fleet, anyio.fail_after(ctx.size.ttl * 3 + 30):
        await fleet.wait_ready()
        watcher = await kv.watch(name)
        last_beat = 0.0
        while (entry := await watcher.updates(timeout=30)) is not None:  # None ends the initial values
            last_beat = _beat_time(entry, last_beat)
        fleet.bots[0].kill()
        killed = time.time()
        while True:
            entry = await watcher.updates(timeout=ctx.size.ttl * 3 + 30)
            if entry is None:
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                seen = time.time()
                break
            last_beat = _beat_time(entry, last_beat)
        await watcher.stop()
    return {"dead_shown_after_kill_s": seen - killed, "dead_shown_after_last_beat_s": seen - last_beat}


def _beat_time(entry, previous: float) -> float:
    try:
        return heartbeat_decoder.decode(entry.value).heartbeat_at
    except (msgspec.DecodeError, TypeError):
        return previous


async def run(ctx: Context) -> dict[str, float]:
    ack_wait = ctx.size.ack_wait or shipped_ack_wait()
    nc = await connect(Settings(servers=(ctx.url,)), get_logger("bench"), wait=False)
    try:
        js = nc.jetstream()
        return {**await killed_mid_job(ctx, nc, js, ack_wait), **await killed_bot_seen_dead(ctx, js)}
    finally:
        await nc.close()


SCENARIO = Scenario(
    name="recovery",
    summary="a SIGKILLed bot: its job completed by another bot, and its liveness key seen expiring",
    run=run,
    metrics=(
        Metric("restarted_after_kill_s", "s", "kill -> job restarted on another bot"),
        Metric("completed_after_kill_s", "s", "kill -> job's result recorded"),
        Metric("restarted_after_delivery_s", "s", "first delivery -> redelivery (the ack deadline)"),
        Metric("dead_shown_after_kill_s", "s", "kill -> watcher sees the key expire"),
        Metric("dead_shown_after_last_beat_s", "s", "last heartbeat -> watcher sees the key expire"),
    ),
    consumer_overrides=lambda size: {"ack_wait": int(size.ack_wait * NS)} if size.ack_wait else {},
    params=lambda size: {"ack_wait_s": size.ack_wait or shipped_ack_wait(), "ttl_s": size.ttl,
                         "job_seconds": size.job_seconds, "bots": 2},
)
