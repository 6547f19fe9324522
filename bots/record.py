"""Recording a job's result: the fence that makes result-then-ack exactly-once into the record.

A result is published to ``corral.results.<job_id>.<bot>`` (named by its writer) and
its stream acknowledgement awaited; only then does the executor ack the job. Each
publish expects that no subject under ``corral.results.<job_id>.*`` holds a message
yet, so the server stores the first result of a job, whichever bot wrote it, and
refuses every later one (err 10071). That fence holds as long as the result is kept
(the stream's max_age, 7 days), not just for a dedupe window, so a slow bot finishing
a job another bot already completed gets a refusal, acks, and records nothing.

Results are committed through the bot's :class:`~corral.bots.commit.Committer`:
alone when nothing is in flight, as one atomic batch with the others that finished
meanwhile when something is. Each job still learns its own result's fate.

While the results stream cannot answer (a leader election, a reconnect, interest
not yet propagated through a cluster) the finished job is *held*: leaving it
unacked would have it redelivered and run again, and each such delivery counts
as an attempt, so a job that succeeded could be dead-lettered for "exceeding its
attempts". The bot's in-progress acks keep its deadline alive while the result
is retried for up to :data:`RESULT_HOLD` seconds. From the first retry the
result is also written ahead to the outbox, so it survives this bot dying; the
outbox publishes it when the server is back.

The interface is one call, :meth:`Recorder.record`, answering a :class:`Recording`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import anyio

from corral.bots.commit import Committer
from corral.bots.outbox import Outbox
from corral.core.errors import ResultAlreadyRecordedError, StreamFullError, TransportError
from corral.core.log import Logger
from corral.core.names import result_fence, result_subject
from corral.core.publisher import AsyncPublisher

#: Seconds a bot holds a finished job while its result cannot be recorded, before leaving it to
#: the outbox and a redelivery.
RESULT_HOLD = 60.0


class Status(StrEnum):
    RECORDED = "recorded"  #: stored: ack the job
    FENCED = "fenced"  #: a result was already stored (another delivery's, or our own first try acknowledged late)
    REFUSED = "refused"  #: the results stream or store is full: not the job's fault, and not a death
    UNRECORDED = "unrecorded"  #: the server did not answer in time; the result waits in the outbox (if any)


@dataclass(frozen=True)
class Recording:
    status: Status
    error: Exception | None = None
    #: A retry was made: a FENCED answer may then be our own earlier publish, acknowledged too late.
    retried: bool = False


RECORDED = Recording(Status.RECORDED)  #: a result stored by its first commit


class Recorder:
    """Publishes results for one bot incarnation, holding the job while the results stream is away."""

    def __init__(self, publisher: AsyncPublisher, outbox: Outbox | None, log: Logger, hold: float = RESULT_HOLD,
                 *, bot: str, committer: Committer | None = None) -> None:
        self.publisher = publisher
        self.outbox = outbox
        self.log = log
        self.hold = hold
        self.bot = bot  #: the writer's name, the last token of every result subject it publishes
        self.committer = committer if committer is not None else Committer(publisher)

    async def record(self, job_id: str, data: bytes, log: Logger, tried: Exception | None = None) -> Recording:
        """Publish the encoded result of ``job_id``; how it went.

        ``tried``: the error a first commit of this very result already met (a group commit's,
        bots/eager.py); the recording goes on from there, as if its own first try had met it.

        On a drain (cancellation) the result stays in the outbox if a retry had begun.
        """
        subject, headers = result_subject(job_id, self.bot), result_fence(job_id)
        err, retried = await self._publish(subject, data, headers, log, tried)
        if err is None:
            return Recording(Status.RECORDED, None, retried)
        if isinstance(err, ResultAlreadyRecordedError):
            return Recording(Status.FENCED, err, retried)
        if isinstance(err, StreamFullError):
            return Recording(Status.REFUSED, err, retried)
        if self.outbox is not None and not retried:
            self.outbox.put(subject, data, headers)  # a retry wrote it ahead already
        return Recording(Status.UNRECORDED, err, retried)

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str], log: Logger,
                       tried: Exception | None = None) -> tuple[Exception | None, bool]:
        """Commit, retrying transport failures for up to ``hold`` seconds: (the final error or None, retried).

        ``tried``: the first commit was made already and met this error."""
        deadline = anyio.current_time() + self.hold
        delay, retried, kept = 0.1, False, None
        err: Exception | None
        while True:
            if tried is not None:
                err, tried = tried, None
            else:
                err = await self.committer.commit(subject, data, headers)
            if not isinstance(err, TransportError) or anyio.current_time() + delay > deadline:
                if kept is not None and self.outbox is not None and (err is None or isinstance(err, ResultAlreadyRecordedError)):
                    self.outbox.discard(kept)  # recorded after all: nothing left to flush
                return err, retried
            if kept is None and self.outbox is not None:
                # Write-ahead: if this bot dies while it holds the job, the result survives on disk.
                kept = self.outbox.put(subject, data, headers)
            log.warning("job.result_retry", error=str(err), retry_in=round(delay, 2))
            await anyio.sleep(delay)
            delay, retried = min(delay * 2, 2.0), True
