"""Nothing lingers: jobs the server gave up on (max_deliver exhausted) go to the dead-letter stream.

Bots dead-letter a job themselves on its last allowed delivery, so the
server's ``max_deliver`` is a backstop. It is reached only when the bot
holding that last delivery dies. The server then leaves the message in the
jobs stream unacked for good, and announces it once in an advisory that is lost
if nobody is listening. Two mechanisms catch it:

* **Listener**: every bot subscribes to the MAX_DELIVERIES advisory and moves
  the message it names.
* **Sweep**: every ``sweep_interval`` seconds a bot walks, per consumer, the
  messages still in the stream at or below its ack floor. The jobs stream has
  limits retention and the purger (bots/purger.py) removes acked jobs by that
  floor within about a second, but it holds back a sequence announced as
  exhausted, so whatever lingers there is either acked and not yet purged or
  given up on, and a held-back one is the first on its subject: so each sweep
  looks at the first ``SWEEP_PROBE`` messages of each consumer's subject only.
  With nothing pending or in flight, the walk also covers the
  delivered part above the floor. A message is taken as exhausted when its job's
  events show at least ``max_deliver - 1`` starts (bots dead-letter the last
  delivery unstarted); an acked job shows far fewer.

Both are idempotent across bots: the dead letter carries
``Nats-Msg-Id: dlq-<seq>`` and deleting an already-deleted message is a no-op.
"""

from __future__ import annotations

import json
import random
import time

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core.connect import TRANSIENT
from corral.core.dlq import move_to_dlq
from corral.core.errors import CorralError
from corral.core.history import attempts_made, bots_that_ran, job_events, seq_of, subject_of
from corral.core.log import Logger
from corral.core.messages import Event, EventType, decode_job, encode
from corral.core.names import JOBS_STREAM, MAX_DELIVERIES_ADVISORY, job_events_subject, parse_job_subject


#: How many of a subject's oldest messages one sweep examines (each costs an events lookup).
SWEEP_PROBE = 50


class Reaper:
    def __init__(self, nc: NATS, js: JetStreamContext, log: Logger, interval: float, bot: str = "") -> None:
        self.nc = nc
        self.bot = bot  #: named in a dead letter when no bot is known to have started the job
        self.js = js
        self.log = log.bind(component="reaper")
        self.interval = interval
        self.reaped = 0

    async def reap(self, seq: int, reason: str, attempts: int = 0) -> bool:
        """Move the jobs-stream message at ``seq`` to the dead-letter stream; False if it is gone."""
        try:
            msg = await self.js.get_msg(JOBS_STREAM, seq=seq, direct=True)
        except nats.js.errors.NotFoundError:
            return False
        subject = subject_of(msg)
        place = parse_job_subject(subject)
        queue = place[0] if place else subject.split(".")[2]
        try:
            job = decode_job(msg.data or b"")
            job_id = job.id
        except CorralError:
            job, job_id = None, f"invalid-{seq}"
        bots = bots_that_ran(await job_events(self.js, job_id)) if job is not None else []
        await move_to_dlq(
            self.js, data=msg.data or b"", queue=queue, job_id=job_id, reason=reason, attempts=attempts,
            source_subject=subject, source_seq=seq, bots=bots or ([self.bot] if self.bot else []),
        )
        if job is not None:
            event = Event(type=EventType.DEAD, ts=time.time(), job_id=job.id, kind=job.kind, queue=queue,
                          attempt=attempts or None, correlation_id=job.correlation_id, detail=reason, actor="reaper")
            await self.js.publish(job_events_subject(job.id), encode(event))
        try:
            await self.js.delete_msg(JOBS_STREAM, seq)
        except nats.js.errors.NotFoundError:
            pass
        self.reaped += 1
        self.log.warning("job.reaped", job=job_id, seq=seq, reason=reason)
        return True

    async def listen(self) -> None:
        sub = await self.nc.subscribe(MAX_DELIVERIES_ADVISORY)
        try:
            async for msg in sub.messages:
                try:
                    adv = json.loads(msg.data)
                    deliveries = int(adv.get("deliveries") or 0)
                    await self.reap(int(adv["stream_seq"]), f"server max_deliver exhausted after {deliveries} deliveries", deliveries)
                except (ValueError, KeyError, CorralError, *TRANSIENT) as e:
                    self.log.warning("advisory.unhandled", error=str(e) or type(e).__name__)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def sweep(self) -> int:
        """One sweep; returns how many messages it moved."""
        stream = await self.js.stream_info(JOBS_STREAM)
        moved = 0
        for c in await self.js.consumers_info(JOBS_STREAM):
            max_deliver = c.config.max_deliver or -1
            if max_deliver < 1 or not c.config.filter_subject:
                continue
            floor = c.ack_floor.stream_seq if c.ack_floor else 0
            delivered = c.delivered.stream_seq if c.delivered else 0  # none delivered: nothing to find
            # Above the floor only when idle: then nothing there is in flight, so nothing is being run.
            upto = delivered if not (c.num_ack_pending or c.num_pending) else floor
            seq, probed = stream.state.first_seq, 0
            while seq and seq <= upto and probed < SWEEP_PROBE:
                probed += 1
                try:
                    msg = await self.js.get_msg(JOBS_STREAM, seq=seq, subject=c.config.filter_subject, next=True, direct=True)
                except nats.js.errors.NotFoundError:
                    break
                found = seq_of(msg)
                if found > upto:
                    break
                seq = found + 1
                if await self._exhausted(msg.data or b"", max_deliver):
                    why = f"lingered after max_deliver ({max_deliver}) was exhausted; found by sweep"
                    moved += await self.reap(found, why, max_deliver)
        return moved

    async def _exhausted(self, data: bytes, max_deliver: int) -> bool:
        try:
            job = decode_job(data)
        except CorralError:
            return True  # undecodable and already delivered: no bot will ever finish it
        events = await job_events(self.js, job.id)
        # Bots dead-letter the last allowed delivery without starting it, so a job the server gave
        # up on (its holder died on that last delivery) shows at most max_deliver - 1 starts. A
        # first delivery records no start; attempts_made infers it when it left no trace.
        return attempts_made(events) >= max_deliver - 1

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.listen)
            while True:
                await anyio.sleep(self.interval * (0.5 + random.random()))
                try:
                    await self.sweep()
                except (CorralError, msgspec.DecodeError, nats.js.errors.APIError, *TRANSIENT) as e:
                    self.log.warning("sweep.failed", error=str(e) or type(e).__name__)
