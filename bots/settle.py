"""What a redelivery finds before it may run: a recorded result, a poison history, spent attempts.

A first delivery runs without looking (no round trip). A redelivery reads the
job's result and events (direct gets; no consumer) and comes to one verdict:

* :class:`Recorded`: a result is already recorded, so the handler is not run
  again (``duplicate``); what follows success is repeated, in case the bot that
  recorded it died before submitting the next step.
* :class:`Bury`: the job goes to the dead-letter stream: quarantined as poison,
  or out of attempts.
* :class:`Run`: run it, as attempt ``attempt``: one more than the deliveries
  the trail shows started or failed. Deliveries that never started (a limit
  throttled them, or the bot could not read the history and left them) are not
  attempts; the consumer's ``max_deliver`` still bounds every delivery. A first
  delivery records no ``started``; if it left no trace at all, it died holding
  the job (core/history.py, ``first_delivery_unrecorded``): an attempt, and a
  death by an unknown bot, so the redelivery is a suspect.

Poison without bystanders (docs/jobs.md): a job whose history shows a death
with no outcome is a *suspect* and runs alone on its bot until it has an
outcome, so a death during that run is its own. Only those isolated deaths
count toward ``poison_after``. A death beside other jobs may have been a
neighbour's doing: it quarantines the job only at the much higher
``bystander_deaths_max``. Every delivery that started is still an attempt, so
``max_attempts`` bounds a job's runs whatever killed its bots; isolation keeps a
bystander to one such death.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext

from corral.bots.config import BotConfig
from corral.core.history import (
    UNKNOWN_BOT, attempts_made, bots_that_ran, deaths, job_events, job_result, last_span, throttled_deliveries,
)
from corral.core.messages import Job, JobResult


@dataclass(frozen=True)
class Run:
    """Run the delivery as ``attempt``; ``throttles`` earlier deliveries were throttled."""

    attempt: int  #: the delivery's number net of throttled ones; its events carry it
    throttles: int = 0
    ran_by: tuple[str, ...] = ()  #: bots that started earlier deliveries (a dead letter names them)
    suspect: bool = False  #: an earlier delivery died with no outcome: run alone
    previous_span: tuple[str, str] | None = None  #: (trace id, span id) of the attempt before, to link (core/tracing.py)


@dataclass(frozen=True)
class Recorded:
    """A result is recorded already: settle as a duplicate."""

    result: JobResult
    attempt: int


@dataclass(frozen=True)
class Bury:
    """Dead-letter the delivery, naming ``bots`` (none known: the bot that buries it)."""

    reason: str
    attempt: int
    bots: list[str]


Verdict = Run | Recorded | Bury


class Settler:
    """Decides what a delivery may do, from what the streams recorded about its job."""

    def __init__(self, js: JetStreamContext, config: BotConfig, max_deliver: int) -> None:
        self.js = js
        self.config = config
        self.max_deliver = max_deliver

    async def settle(self, job: Job, delivered: int) -> Verdict:
        """The verdict for delivery number ``delivered`` of ``job``.

        Raises:
            TransportError: the result or the events could not be read (the delivery stays unacked).
        """
        if delivered <= 1:
            return Run(delivered)
        recorded = await job_result(self.js, job.id)
        if recorded is not None:
            return Recorded(recorded, delivered)
        events = await job_events(self.js, job.id)
        throttles = throttled_deliveries(events)
        # Deliveries that never started (throttled, or interrupted before the history could be
        # read) are not attempts: count the ones the trail shows started (core/history.py). A
        # first delivery that left no trace at all started and died: it counts, as a death.
        attempt = attempts_made(events, delivered) + 1
        died = deaths(events, delivered)
        alone = [d for d in died if d.isolated]
        beside = [d for d in died if not d.isolated]
        if len(alone) >= self.config.poison_after:
            # Named: only the bots it killed while it ran alone, not every bot that ran it.
            bots = sorted({d.bot for d in alone})
            return Bury(f"quarantined: {len(alone)} deliveries died with no outcome while running alone "
                        f"(bots: {', '.join(bots)})", attempt, bots)
        if len(beside) >= self.config.bystander_deaths_max:
            bots = sorted({d.bot for d in beside} - {UNKNOWN_BOT})
            return Bury(f"quarantined: {len(beside)} deliveries died with no outcome beside other jobs "
                        f"(bots: {', '.join(bots)})", attempt, bots)
        ran_by = bots_that_ran(events)
        # max_deliver counts every delivery, throttled or not: the server's backstop (docs/features.md).
        if attempt > job.max_attempts or delivered >= self.max_deliver:
            reason = self.exhausted(job, attempt, delivered, throttles)
            if died:
                reason += f"; {len(died)} earlier deliveries died with no outcome ({len(beside)} beside other jobs)"
            return Bury(reason, attempt, ran_by)
        return Run(attempt, throttles, tuple(ran_by), suspect=bool(died), previous_span=last_span(events))

    def exhausted(self, job: Job, attempt: int, delivered: int, throttles: int) -> str:
        """Why a redelivery is out of attempts (or deliveries)."""
        if attempt > job.max_attempts:
            uncounted = delivered - attempt
            note = f" ({uncounted} deliveries that never started not counted)" if uncounted > 0 else ""
            return f"attempt {attempt} exceeds the {job.max_attempts} attempt(s) allowed{note}"
        if not throttles:
            return f"delivery {delivered} reached the consumer's max_deliver ({self.max_deliver})"
        return (f"delivery {delivered} reached the consumer's max_deliver ({self.max_deliver}) after {throttles} throttled "
                f"deliveries: kind {job.kind} stayed over its limits")
