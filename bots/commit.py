"""Group commit of results: one fenced publish when idle, one atomic batch per round under load.

Under ``sync_interval: always`` every stored write costs the server an fsync, and a
bot's finished jobs each wait for their result's acknowledgement before they are
acked. Committing the results that finish close together as one JetStream atomic
batch makes that one fsync for the lot (docs/nats-notes.md, "Atomic batch publish").

An atomic batch is not free, though: on file storage the server flushes each commit to
disk, whatever its ``sync_interval`` (docs/nats-notes.md). Under ``sync_interval: always``,
corral's shipped setting, that is one fsync instead of one per result, a large gain. On a
server left at the default lazy fsync it is one fsync more than individual publishes pay,
and a batch is several times slower per result than publishing the same results one by one.
There is a fixed cost besides: on a single-replica file stream the server stages each batch in a
store of its own on disk (a directory and files, made and removed per batch), about 2 ms of server
CPU per batch here, so a batch of 16 cost the server 140 µs per result and one of 256 cost 30,
against 19 for a single publish on a lazy server and 175 under ``always`` (docs/nats-notes.md).
A bot cannot read the server's fsync setting, so the committer measures. It times every round
big enough to batch, and keeps the last :data:`WINDOW` of those times for each way. A busy bot's
round times are mostly its own and the server's queueing, so one round can take ten times another
of the same kind: each estimate is a *median*. A batch round's estimate is its time over its size.
A round of single publishes is timed in two parts, the wait for its first acknowledgement and the
spacing of the rest, and projected to the size batch rounds have had: a trial of 16 single
publishes would otherwise carry the round trip on 16 results where a batch of 200 spreads it over
200, and on a lazy-fsync server that bias alone made the committer batch about a third of its
results, which cost the server 70-80 µs per job where single publishes cost 40-46. Single
publishes are chosen only when they are clearly cheaper (:data:`SINGLES_MARGIN`), since batching
is what keeps the server's work low when its disk is the bound. Every :data:`PROBE_EVERY` rounds,
and no more often than every :data:`PROBE_SECONDS`, the other way is tried once, so a server whose
configuration changes is noticed. ``--no-group-commit`` (``batching=False``) forces batching off: every
result is published at once, on its own, beside the others in flight.

The rule is latency first. A result that finds no commit in flight is published at
once, alone, as a plain fenced publish. While a commit is in flight the results that
finish meanwhile queue up; when it is answered, the first of them leads the next
round and commits everything queued (up to :data:`MAX_BATCH`) as one batch, or one by one,
pipelined, while fewer than :data:`MIN_BATCH` have queued. So an
idle bot never waits to batch, and a busy one batches exactly as much as its commit
latency lets pile up. There is no background task: the caller whose turn it is does
the round, and hands the lead to the next waiter when it is done.

Every result carries the cross-job fence (:func:`corral.core.names.result_fence`).
The server refuses a batch whole if any member is fenced, and refuses a batch for
other reasons too (a stream made before ``allow_atomic``, too large, too many in
flight). A refused batch falls back to individual, pipelined publishes, where only
the fenced result is refused. A batch that was not answered at all gives each member
the transport error, which the caller retries (bots/record.py): a batch is all or
nothing, so a retry finds either nothing or its own result stored.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from corral.core.connect import publish_error
from corral.core.errors import ResultAlreadyRecordedError, TransportError
from corral.core.publisher import AsyncPublisher

#: Results a round needs before it is committed as one atomic batch; a smaller round is published
#: one by one, pipelined. A batch commit has a fixed cost of its own on the server (it is staged
#: and flushed to disk as a whole), measured at several individual publishes' worth: below a
#: dozen or so results individual publishes finished sooner (docs/nats-notes.md, bench/commit_rate.py).
MIN_BATCH = 16

#: Results per atomic batch at most. The server allows 1,000. Each batch costs the server about
#: 2 ms of staging whatever its size (docs/nats-notes.md), so under ``always`` 512 beat 256: in
#: interleaved 4-bot drains of 30,000 jobs, 7,457 / 6,436, 7,462 / 6,499 and 6,260 / 5,681 jobs/s,
#: the server's CPU per job 55-60 against 60-73 µs. Past that a refused batch's fallback (one
#: publish per member) and each bot's memory (bots/slots.py COMMIT_DEPTH) grow with it.
MAX_BATCH = 512

#: One round in this many, of those big enough to batch, is committed the way that looks slower,
#: so that the estimate of it stays current (a restarted server may fsync differently)...
PROBE_EVERY = 25

#: ...and no more often than once in this many seconds. A probe costs its bot a round the slow way:
#: on a lazy-fsync server a batch round took 20-90 ms where single publishes took 3-10 ms, and with
#: a probe every 25 rounds that was a stall every 150 ms or so.
PROBE_SECONDS = 5.0

#: Rounds of each way whose median is its estimate of seconds per result.
WINDOW = 9

#: Single publishes are chosen only when their estimate is at most this share of the batches'.
#: Measured with 4 bots draining no-op jobs on a 2-core box, once single publishes were projected
#: to the batches' size: on a lazy server batches cost 2-8 times single publishes per result in
#: round time, 6-8 times once warmed up; under ``always`` the two came within 0.7-1.4 times of
#: each other, since a saturated server's queue was most of both, while single publishes cost the
#: server far more CPU (175 against about 30 µs a result, which a bot cannot see). Under a margin
#: of 0.75 a bot under ``always`` went one by one for about a tenth of its results.
SINGLES_MARGIN = 1 / 3

#: Rounds each way is measured before the cheaper one is chosen: one round alone can mislead
#: on a busy machine (a busy bot's rounds vary tenfold), and a wrong first choice would stand
#: until probes outvote it.
WARMUP = 5

#: Warm-up ends early, after two rounds each way, where one way's estimate is this many times the
#: other's: on a lazy-fsync server batches measured up to 8 times single publishes, and each further
#: warm-up batch stalled its bot for tens of milliseconds. A wrong early choice is undone by the
#: next probe.
DECISIVE = 3.0


class _Result:
    """One result waiting for its round; ``wake`` resolves when it is settled or handed the lead.

    A plain future rather than an anyio Event: one is made per result, and the Event costs several
    times more to make (it looks up the running backend each time).
    """

    __slots__ = ("data", "error", "finished", "headers", "lead", "subject", "wake")

    def __init__(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        self.subject, self.data, self.headers = subject, data, headers
        self.wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None
        self.finished = False
        self.lead = False  #: handed the next round while waiting

    def set(self) -> None:
        if not self.wake.done():
            self.wake.set_result(None)


@dataclass
class CommitStats:
    singles: int = 0  #: results published one by one (alone, or in a round too small to batch)
    batches: int = 0  #: atomic batches committed
    batched: int = 0  #: results committed in those batches
    fallbacks: int = 0  #: refused batches whose results were published one by one
    direct: int = 0  #: results published on their own at once (group commit off)
    probes: int = 0  #: rounds committed the way that looked slower, to keep its estimate current


class Chooser:
    """Learns whether a round is committed faster as one atomic batch or one by one, on this server.

    A batch round's estimate is the median seconds per result of its last ``window`` rounds. A round
    of single publishes is measured in two parts: the wait for its first acknowledgement (the round
    trip, and the queue ahead of it) and the spacing of the acknowledgements after it (what each
    further result costs). Its estimate per result is those medians projected to the size batch
    rounds have had: a trial of 16 single publishes shares its round trip among 16 results where a
    batch of 200 shares it among 200, so dividing each round's own time by its own size would
    favour batches by the size of the round trip alone, and on a busy bot that is most of a round.
    The two take turns for their first ``warmup`` rounds (single publishes first, see :meth:`choose`),
    or two each where one is :data:`DECISIVE` times the other; then batching is used unless single
    publishes cost at most ``margin`` of it, and every
    ``probe_every`` rounds the other way once.
    """

    def __init__(self, probe_every: int = PROBE_EVERY, window: int = WINDOW, warmup: int = WARMUP,
                 margin: float = SINGLES_MARGIN, probe_seconds: float = PROBE_SECONDS) -> None:
        self.probe_every = max(2, probe_every)
        self.probe_seconds = probe_seconds
        self.warmup = max(1, warmup)
        self.margin = margin
        self.last_probe = 0  #: rounds counted at the last probe
        self.last_probe_at = time.monotonic()
        window = max(1, window)
        self.recent: collections.deque[float] = collections.deque(maxlen=window)  #: batch rounds, seconds per result
        self.sizes: collections.deque[int] = collections.deque(maxlen=window)  #: batch rounds' sizes
        self.first: collections.deque[float] = collections.deque(maxlen=window)  #: singles: seconds to the first ack
        self.spacing: collections.deque[float] = collections.deque(maxlen=window)  #: singles: seconds per ack after it
        self.samples: dict[bool, int] = {True: 0, False: 0}
        self.rounds = 0
        self.refusals = 0  #: batches refused in a row for a reason other than the fence

    @property
    def per_result(self) -> dict[bool, float | None]:
        """batched? -> estimated seconds per result, single publishes projected to the batches' size."""
        batch = statistics.median(self.recent) if self.recent else None
        if not self.first:
            return {True: batch, False: None}
        size = statistics.median(self.sizes) if self.sizes else 1
        single = (statistics.median(self.first) + (size - 1) * statistics.median(self.spacing)) / size
        return {True: batch, False: single}

    @property
    def warming(self) -> bool:
        """Either way has fewer than ``warmup`` rounds measured, unless after two each one is
        :data:`DECISIVE` times the other."""
        fewest = min(self.samples.values())
        if fewest >= self.warmup:
            return False
        if fewest >= min(2, self.warmup):
            batch, single = self.per_result.values()
            if batch and single and max(batch, single) >= DECISIVE * min(batch, single):
                return False
        return True

    @property
    def prefers_batch(self) -> bool:
        """Batching, unless single publishes measured clearly cheaper (or either is unmeasured), or
        the stream keeps refusing batches."""
        if self.refusals >= self.warmup:
            return False
        estimate = self.per_result
        batch, single = estimate[True], estimate[False]
        return batch is None or single is None or single > self.margin * batch

    def choose(self) -> tuple[bool, bool]:
        """(batch this round?, is it a probe of the slower mode?). Warm-up starts with single publishes:
        a trial of them is short (:data:`MIN_BATCH`), and it is measured before any batch has slowed
        the stream down for everyone."""
        self.rounds += 1
        if self.warming:
            return self.samples[True] < self.samples[False], False
        best = self.prefers_batch
        if (self.rounds - self.last_probe >= self.probe_every
                and time.monotonic() - self.last_probe_at >= self.probe_seconds):
            self.last_probe, self.last_probe_at = self.rounds, time.monotonic()
            return not best, True
        return best, False

    def stored_batch(self) -> None:
        """A batch was stored: a run of refusals (and the refused rounds' times, which measured
        the fallback) is over."""
        if self.refusals:
            self.refusals = 0
            self.recent.clear()
            self.sizes.clear()

    def learn(self, batched: bool, seconds: float, results: int) -> None:
        """Fold one answered round into its mode's estimate; a round of single publishes known only by
        its total time counts as evenly spaced acknowledgements."""
        results = max(1, results)
        if not batched:
            self.learn_singles(seconds / results, seconds, results)
            return
        self.samples[True] += 1
        self.recent.append(seconds / results)
        self.sizes.append(results)

    def learn_singles(self, first: float, last: float, results: int) -> None:
        """Fold one answered round of single publishes: seconds to its first and to its last acknowledgement."""
        self.samples[False] += 1
        self.first.append(first)
        self.spacing.append(max(0.0, last - first) / max(1, results - 1))


class Committer:
    """Commits one bot's results: each caller learns its own result's fate."""

    def __init__(self, publisher: AsyncPublisher, max_batch: int = MAX_BATCH, batching: bool = True,
                 min_batch: int = MIN_BATCH, adaptive: bool = True) -> None:
        """``batching`` False: no group commit, every result is published at once on its own.

        ``adaptive`` False: every round big enough is batched, however the server answers.
        """
        self.publisher = publisher
        self.max_batch = max(1, max_batch)
        self.min_batch = max(2, min_batch)
        self.batching = batching
        self.stats = CommitStats()
        self.chooser = Chooser()
        self.adaptive = adaptive
        self._queue: collections.deque[_Result] = collections.deque()
        self._leading = False

    async def commit(self, subject: str, data: bytes, headers: dict[str, str]) -> Exception | None:
        """Publish one result; None once it is stored, else the translated error (core/connect.py)."""
        return (await self.commit_many([(subject, data, headers)]))[0]

    async def commit_many(self, results: list[tuple[str, bytes, dict[str, str]]]) -> list[Exception | None]:
        """Publish several results (subject, data, headers), as :meth:`commit` does one: each one's
        fate, in order. They join the queue together, so they share rounds with each other and with
        the results queued before and after them; one wait covers them all."""
        if not self.batching:
            return await self._direct(results)
        items = [_Result(*r) for r in results]
        self._queue.extend(items)
        for item in items:
            while not item.finished:
                if self._leading:
                    await self._wait(item, items)
                    if item.finished:
                        break
                await self._lead()
        return [i.error for i in items]

    async def _lead(self) -> None:
        """Commit one round from the front of the queue, then hand the lead on."""
        self._leading = True
        try:
            n = min(self.max_batch, len(self._queue))
            batched, probe = self.chooser.choose() if n >= self.min_batch and self.adaptive else (n >= self.min_batch, False)
            if not batched and n > self.min_batch and (probe or self.chooser.warming):
                # A trial of single publishes takes a sample's worth only: their cost per result hardly
                # depends on the round's size, and on a server that fsyncs every write a full round
                # of them would cost a full round of fsyncs.
                n = self.min_batch
            batch = [self._queue.popleft() for _ in range(n)]
            # Shielded: the round settles results of other callers too, and it is bounded by the ack timeout.
            with anyio.CancelScope(shield=True):
                if len(batch) >= self.min_batch:
                    await self._chosen_round(batch, batched, probe)
                else:
                    await self._single_round(batch)
        finally:
            self._hand_over()

    async def _direct(self, results: list[tuple[str, bytes, dict[str, str]]]) -> list[Exception | None]:
        """Publish each result on its own at once, pipelined beside the others in flight."""
        self.stats.direct += len(results)
        futs = [await self.publisher.publish(*r) for r in results]
        return await self._answers(futs, [r[0] for r in results])

    async def _wait(self, item: _Result, mine: list[_Result]) -> None:
        """Wait until ``item`` is settled or handed the lead; a cancelled waiter leaves no gap.

        Cancelled, the caller's results still queued (``mine``) leave the queue unsent, and a lead
        handed to one of them is handed on, or nobody would lead again.
        """
        try:
            await item.wake
            if not item.finished:
                # Handed the lead: let the callers the last round just woke queue their next results first.
                await anyio.lowlevel.checkpoint()
        except BaseException:
            taken = {id(i) for i in mine}
            left = [i for i in self._queue if id(i) in taken]
            if left:
                self._queue = collections.deque(i for i in self._queue if id(i) not in taken)
                if any(i.lead for i in left):
                    self._hand_over()
            raise

    def _hand_over(self) -> None:
        """Give the next round to the first waiter, or stop leading."""
        if self._queue:
            nxt = self._queue[0]
            nxt.lead = True
            nxt.set()
        else:
            self._leading = False

    @staticmethod
    def _settle(batch: list[_Result], errors: list[Exception | None]) -> None:
        for item, err in zip(batch, errors, strict=True):
            item.error, item.finished = err, True
            item.set()

    async def _chosen_round(self, batch: list[_Result], batched: bool, probe: bool) -> None:
        """A round big enough to batch, committed the way the chooser picked, and timed for it."""
        self.stats.probes += probe
        loop = asyncio.get_running_loop()
        started = loop.time()
        if batched:
            if await self._batch_round(batch):  # a round cut short by a lost connection says nothing
                self.chooser.learn(True, loop.time() - started, len(batch))
            return
        self.stats.singles += len(batch)
        first: list[float] = []
        futs = [await self.publisher.publish(batch[0].subject, batch[0].data, batch[0].headers)]
        futs[0].add_done_callback(lambda _f: first.append(loop.time()))
        futs += await self._send_each(batch[1:])
        await self._settle_each(batch, futs)
        if first and not any(isinstance(i.error, TransportError) for i in batch):
            self.chooser.learn_singles(first[0] - started, loop.time() - started, len(batch))

    async def _single_round(self, batch: list[_Result]) -> bool:
        """Each result on its own, pipelined; False if the connection failed under it."""
        self.stats.singles += len(batch)
        await self._settle_each(batch, await self._send_each(batch))
        return not any(isinstance(i.error, TransportError) for i in batch)

    async def _batch_round(self, batch: list[_Result]) -> bool:
        """One atomic batch; refused, its results one by one (only a fenced one is refused then).

        A refused batch's fallback counts toward the batch's time. A refusal that is not the fence
        (a stream made before ``allow_atomic``) is also told to the chooser, which stops batching
        after a few of them until a probe's batch is stored again.
        """
        err = await self._atomic(batch)
        if err is None or isinstance(err, TransportError):
            self._settle(batch, [err] * len(batch))
            if err is None:
                self.chooser.stored_batch()
            return err is None
        self.stats.fallbacks += 1
        if not isinstance(err, ResultAlreadyRecordedError):
            self.chooser.refusals += 1
        futs = await self._send_each(batch)
        await self._settle_each(batch, futs)
        return not any(isinstance(i.error, TransportError) for i in batch)

    async def _send_each(self, batch: list[_Result]) -> list[asyncio.Future]:
        """Publish each result on its own, pipelined: the futures of their acknowledgements."""
        return [await self.publisher.publish(i.subject, i.data, i.headers) for i in batch]

    async def _settle_each(self, batch: list[_Result], futs: list[asyncio.Future]) -> None:
        self._settle(batch, await self._answers(futs, [i.subject for i in batch]))

    async def _atomic(self, batch: list[_Result]) -> Exception | None:
        """One atomic batch: only the commit (the last message) asks for a reply, the PubAck of all."""
        try:
            fut = await self.publisher.publish_batch([(i.subject, i.data, i.headers) for i in batch])
        except Exception as e:  # noqa: BLE001 - translated right here
            return publish_error(e, batch[0].subject)
        [err] = await self._answers([fut], [batch[-1].subject])
        if err is None:
            self.stats.batches += 1
            self.stats.batched += len(batch)
        return err

    async def _answers(self, futs: list[asyncio.Future], subjects: list[str]) -> list[Exception | None]:
        """Each publish's fate, awaited together under one deadline (None: stored).

        One ``asyncio.wait`` per round instead of a timeout scope per result: those scopes were a
        measurable share of a no-op job's CPU. The futures are left running past the deadline,
        never cancelled, as the publisher's own expiry sweep expects.
        """
        pending = [f for f in futs if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.publisher.ack_timeout)
        return [_fate(f, s) for f, s in zip(futs, subjects, strict=True)]


def _fate(fut: asyncio.Future, subject: str) -> Exception | None:
    """A publish future's outcome as the translated error (core/connect.py), or None once stored."""
    if not fut.done():
        return publish_error(TimeoutError("no JetStream ack in time"), subject)
    exc = TimeoutError("cancelled") if fut.cancelled() else fut.exception()
    if exc is None:
        return None
    return publish_error(exc, subject) if isinstance(exc, Exception) else TransportError(str(exc))
