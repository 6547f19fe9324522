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
big enough to batch and keeps the last :data:`WINDOW` estimates of seconds per result for each
way. A busy bot's round times are mostly its own and the server's queueing, so one round can take
ten times another of the same kind: each estimate is a *median*. A round's wait (the round trip,
and the server's queue ahead of it) is shared by its results, so each way must be judged at the
same round size. A batch round, or a round of single publishes the chooser picked, counts as its
time over its size. A *trial* of single publishes (warm-up and probes) takes only a sample, since
under ``always`` each one is an fsync; it publishes the first result alone and waits for it, then
the rest, which separates the shared wait from each result's cost, and is projected to the size
recent rounds have had (:meth:`Chooser.learn_trial`). Neither the trial's time over its own size
(the wait charged to 16 results instead of 200: on a lazy server that made every bot batch about
a third of its results) nor the spacing of its acknowledgements (the server answers a pipelined
burst in one clump) would do. Single publishes are chosen only when they are clearly cheaper
(:data:`SINGLES_MARGIN`), since batching is what keeps the server's work low when its disk is
the bound. Every :data:`PROBE_EVERY` rounds, and no more often than every :data:`PROBE_SECONDS`,
the other way is tried once, so a server whose configuration changes is noticed.
``--no-group-commit`` (``batching=False``) forces batching off: every
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
#: Measured with 4 bots draining no-op jobs on a 2-core box: on a lazy server single-publish rounds
#: took about a third of the batches' time per result (a batch's staging on disk costs the server
#: about 2 ms whatever its size); under ``always`` single publishes cost several times the batches,
#: one fsync each. A round's time is mostly queueing, so the margin keeps a bot under ``always``
#: from going one by one on a few lucky rounds: with no margin and a moving mean, half the runs
#: settled on single publishes, 25-30 % slower, with the server doing more per result.
SINGLES_MARGIN = 0.5

#: Rounds each way is measured before the cheaper one is chosen: one round alone can mislead
#: on a busy machine (a busy bot's rounds vary tenfold), and a wrong first choice would stand
#: until probes outvote it.
WARMUP = 5

#: Warm-up ends early, after two rounds each way, where one way's estimate is this many times the
#: other's: on a lazy-fsync server batch rounds cost 3-4 times single publishes per result, and each
#: further warm-up batch stalled its bot for tens of milliseconds; under ``always`` single publishes
#: cost 2-4 times the batches in rounds of 40, about 10 in rounds of 200. A wrong early choice is
#: undone by the next probe.
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

    Each way's estimate is the median seconds per result of its last ``window`` rounds; a trial of
    single publishes counts as its projection to the size recent rounds have had (:meth:`learn_trial`). The two
    take turns for their first ``warmup`` rounds (batching first: the shipped server fsyncs
    always), or two each where one is :data:`DECISIVE` times the other; then batching is used
    unless single publishes cost at most ``margin`` of it, and every ``probe_every`` rounds, at
    most once in ``probe_seconds``, the other way once.
    """

    def __init__(self, probe_every: int = PROBE_EVERY, window: int = WINDOW, warmup: int = WARMUP,
                 margin: float = SINGLES_MARGIN, probe_seconds: float = PROBE_SECONDS) -> None:
        self.probe_every = max(2, probe_every)
        self.probe_seconds = probe_seconds
        self.warmup = max(1, warmup)
        self.margin = margin
        self.last_probe = 0  #: rounds counted at the last probe
        self.last_probe_at = time.monotonic()
        self.recent: dict[bool, collections.deque[float]] = {
            True: collections.deque(maxlen=max(1, window)), False: collections.deque(maxlen=max(1, window))}
        self.sizes: collections.deque[int] = collections.deque(maxlen=max(1, window))  #: recent rounds' sizes
        self.per_result: dict[bool, float | None] = {True: None, False: None}  #: batched? -> median seconds per result
        self.samples: dict[bool, int] = {True: 0, False: 0}
        self.rounds = 0
        self.refusals = 0  #: batches refused in a row for a reason other than the fence

    @property
    def warming(self) -> bool:
        """Either way has fewer than ``warmup`` rounds measured, unless after two each one is
        :data:`DECISIVE` times the other."""
        fewest = min(self.samples.values())
        if fewest >= self.warmup:
            return False
        if fewest >= min(2, self.warmup):
            batch, single = self.per_result[True], self.per_result[False]
            if batch and single and max(batch, single) >= DECISIVE * min(batch, single):
                return False
        return True

    @property
    def prefers_batch(self) -> bool:
        """Batching, unless single publishes measured clearly cheaper (or either is unmeasured), or
        the stream keeps refusing batches."""
        if self.refusals >= self.warmup:
            return False
        batch, single = self.per_result[True], self.per_result[False]
        return batch is None or single is None or single > self.margin * batch

    def choose(self) -> tuple[bool, bool]:
        """(batch this round?, is it a probe of the slower mode?)."""
        self.rounds += 1
        if self.warming:
            return self.samples[True] <= self.samples[False], False
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
            self.recent[True].clear()
            self.per_result[True] = None

    def learn(self, batched: bool, seconds: float, results: int) -> None:
        """Fold one answered round into its mode's estimate."""
        self.sizes.append(results)
        self._fold(batched, seconds / max(1, results))

    def learn_trial(self, alone: float, rest: float, results: int) -> None:
        """Fold a trial of single publishes (:meth:`Committer._trial_round`): ``alone`` seconds for its
        first result, ``rest`` for the other ``results - 1``. The wait they share is ``alone`` less one
        result's cost; the trial counts as a round of single publishes the size recent rounds have had."""
        each = max(0.0, rest - alone) / max(1, results - 2)
        wait = max(0.0, alone - each)
        size = statistics.median(self.sizes) if self.sizes else results
        self._fold(False, (wait + size * each) / size)

    def _fold(self, batched: bool, per_result: float) -> None:
        self.samples[batched] += 1
        self.recent[batched].append(per_result)
        self.per_result[batched] = statistics.median(self.recent[batched])


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
            trial = n >= self.min_batch and self.adaptive and not batched and (probe or self.chooser.warming)
            if trial:
                # A trial of single publishes takes a sample's worth only: on a server that fsyncs
                # every write a full round of them would cost a full round of fsyncs.
                n = self.min_batch
            batch = [self._queue.popleft() for _ in range(n)]
            # Shielded: the round settles results of other callers too, and it is bounded by the ack
            # timeout (a trial's two parts together too).
            with anyio.CancelScope(shield=True):
                if trial:
                    await self._trial_round(batch, probe)
                elif len(batch) >= self.min_batch:
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
        started = anyio.current_time()
        ok = await (self._batch_round(batch) if batched else self._single_round(batch))
        if ok:  # a round cut short by a lost connection says nothing about the server's speed
            self.chooser.learn(batched, anyio.current_time() - started, len(batch))

    async def _trial_round(self, batch: list[_Result], probe: bool) -> None:
        """A trial of single publishes on a sample: the first alone, awaited, then the rest pipelined.

        A round's time is mostly the wait that all its results share (the round trip, and the
        server's queue ahead of it), and the server answers a pipelined burst in one clump once it
        has stored all of it, so neither a trial's time over its size nor the spacing of its
        acknowledgements says what one more result costs. Two parts do: the first result's round
        trip is the wait plus one result, the rest's is the wait plus ``n - 1`` results.
        """
        self.stats.probes += probe
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stats.singles += len(batch)
        first = await self._send_each(batch[:1])
        await self._answers(first, [batch[0].subject])
        alone = loop.time() - started
        rest = await self._send_each(batch[1:])
        # The whole trial within one ack timeout, as any round: a first answer that never came
        # leaves the rest only what remains of it (a late one is a transport error, retried).
        left = max(0.0, self.publisher.ack_timeout - alone)
        await self._settle_each(batch, first + rest, left)
        # Learnt only from a trial whose every result was stored (or fenced, which stores nothing
        # and costs no fsync): an error of the connection's says nothing about the server's speed.
        if all(i.error is None or isinstance(i.error, ResultAlreadyRecordedError) for i in batch):
            self.chooser.learn_trial(alone, loop.time() - started - alone, len(batch))

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

    async def _settle_each(self, batch: list[_Result], futs: list[asyncio.Future], timeout: float | None = None) -> None:
        self._settle(batch, await self._answers(futs, [i.subject for i in batch], timeout))

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

    async def _answers(self, futs: list[asyncio.Future], subjects: list[str],
                       timeout: float | None = None) -> list[Exception | None]:
        """Each publish's fate, awaited together under one deadline (``timeout``, else the
        publisher's ack timeout; None: stored).

        One deadline per round instead of a timeout scope per result: those scopes were a
        measurable share of a no-op job's CPU. Each future still pending is waited for alone, in
        turn: the answers to a round come in a clump, so after the first wait the rest are done,
        where one ``asyncio.wait`` on all of them added and removed a callback on each (2.9 µs a
        future, against 0.9). The futures are left running past the deadline, never cancelled, as
        the publisher's own expiry sweep expects.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.publisher.ack_timeout if timeout is None else timeout)
        for fut in futs:
            if not fut.done():
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.wait((fut,), timeout=left)
        return [_fate(f, s) for f, s in zip(futs, subjects, strict=True)]


def _fate(fut: asyncio.Future, subject: str) -> Exception | None:
    """A publish future's outcome as the translated error (core/connect.py), or None once stored."""
    if not fut.done():
        return publish_error(TimeoutError("no JetStream ack in time"), subject)
    exc = TimeoutError("cancelled") if fut.cancelled() else fut.exception()
    if exc is None:
        return None
    return publish_error(exc, subject) if isinstance(exc, Exception) else TransportError(str(exc))
