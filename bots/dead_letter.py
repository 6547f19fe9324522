"""Moving a delivery to the dead-letter stream, and only then out of the work queue.

The order: store the dead letter (core/dlq.py waits for its acknowledgement),
run what follows a death (compensations, fan-in, unique key; bots/after.py),
then terminate the delivery. A bot that dies between two steps leaves the job
in the work queue; its redelivery repeats the steps, and the dead letter's
Msg-Id (``dlq-<jobs stream seq>``) keeps the second copy out. A dead letter
that cannot be stored leaves the job where it is, to try again later: nothing
is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from corral.bots.after import AfterOutcome, Ended, Outcome, follow
from corral.bots.config import BotConfig
from corral.bots.trail import Trail
from corral.core.dlq import move_to_dlq
from corral.core.errors import CorralError
from corral.core.messages import EventType, Job


async def terminate(msg: Msg, reason: str) -> None:
    """End the delivery for good (``+TERM``): the server neither redelivers it nor counts it again."""
    await msg._client.publish(msg.reply, b"+TERM " + reason.encode()[:1000])


class DeadLetters:
    """Dead-letters deliveries for one bot incarnation."""

    def __init__(self, js: JetStreamContext, config: BotConfig, trail: Trail, hooks: Sequence[AfterOutcome]) -> None:
        self.js = js
        self.config = config
        self.trail = trail
        self.hooks = hooks

    async def bury(self, msg: Msg, job: Job | None, reason: str, attempt: int, bots: Sequence[str] = ()) -> None:
        """Dead-letter the delivery (``job`` None: its payload is not a job).

        The dead letter's ``Corral-Bots`` header names ``bots``, the bots involved; when none are
        known (a first delivery, a payload that is not a job) it names this bot, so every dead
        letter says where to look.
        """
        seq = msg.metadata.sequence.stream
        queue = msg.subject.split(".")[2] if msg.subject.count(".") >= 3 else "unknown"
        job_id = job.id if job else f"invalid-{seq}"
        try:
            await move_to_dlq(
                self.js, data=msg.data, queue=queue, job_id=job_id, reason=reason, attempts=attempt,
                source_subject=msg.subject, source_seq=seq, bots=list(bots) or [self.config.name],
            )
        except CorralError as e:
            # Not stored: keep the job where it is and try again later; nothing is dropped.
            self.trail.log.error("job.dead_letter_failed", job=job_id, error=str(e))
            await msg.nak(delay=self.config.backoff_max)
            return
        if job is not None:
            await follow(self.hooks, Outcome(Ended.DEAD, job, attempt, reason=reason))  # before the term: repeated harmlessly
        await terminate(msg, reason)
        self.trail.counters.dead += 1
        self.trail.count("dead", job.kind if job else "invalid")
        if job is not None:
            await self.trail.emit(job, EventType.DEAD, attempt, detail=reason)
        self.trail.log.warning("job.dead", job=job_id, reason=reason)
