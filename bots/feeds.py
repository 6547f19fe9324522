"""Pulling several work consumers in priority order.

A bot serves one consumer per queue and priority (``work-<queue>-<priority>``;
a work-queue stream allows no overlapping filters, so priorities cannot share a
consumer). nats-py's ``fetch`` serves one consumer and long-polls it, so a bot
waiting on ``high`` would not see ``low`` work, and cancelling a fetch leaves a
pull request whose messages nobody reads. So the bot sends its own pull
requests (``$JS.API.CONSUMER.MSG.NEXT``) to an inbox per consumer, and keeps
what arrives in a small local buffer per consumer:

* **Taking work** (:meth:`Feeds.claim`): for each free slot, look at the
  consumers in priority order; ask an empty one for what it has right now
  (``no_wait``: the server answers at once, with messages or ``404``), and
  take from the first that has something. One request asks for every slot
  still free, so a burst costs one round trip per consumer, not one per job;
  it never asks for more than the free slots, so work it cannot start stays
  on the server for other bots. Each job starts as it is taken, before the
  next request is sent. So a bot starts the highest priority work the server
  holds; a consumer that just answered "empty" is believed for
  ``EMPTY_FOR`` seconds (one busy bot would otherwise ask an idle ``high``
  consumer before every claim).
* **Fairness** (the starvation rule): every ``fair_every``-th start offers the
  slot to the lower priorities first, taking turns among them (``low``, then
  ``normal``, ...). Under a flood of ``high`` work a bot still gives at least
  one start in ``fair_every`` to lower priorities that have work; with no
  lower work waiting the turn goes back to ``high`` at once.
* **Waiting** (:meth:`Feeds.wait`): when every consumer is empty, one
  long-poll (``batch`` 1, ``expires``) per consumer is left open and the bot
  sleeps until any of them delivers. So idle bots cost one request per
  consumer per ``FETCH_TIMEOUT``, and a job of any priority starts within a
  round trip of being stored. A job a long-poll brings while the bot waits is
  started right where it is read (the client's read loop runs the feed's
  handler, core/nats_client.py), not by the waiter after it wakes: that is a
  task switch less between the server's delivery and the handler. A long-poll that ends empty (the server's
  ``408`` at its expiry) wakes the waiter, which opens the next one at once:
  a bot deaf until its own timer fired again left a burst to the other bots.

A message in a buffer is claimed but not started (at most one per consumer
beyond the free slots, from a long-poll that answered late): the bot keeps its
ack deadline alive with in-progress acks like a running job's, and hands it back
(``nak``) when it stops.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from corral.core.log import Logger
from corral.core.names import api_subject, consumer_op
from corral.core.nats_client import subscribe_inline

#: Seconds a no_wait request may take to answer before it is given up on (a lost request).
ANSWER_TIMEOUT = 2.0
#: Seconds between two log lines for the same refusal status on one consumer.
REFUSAL_LOG_EVERY = 10.0
#: Seconds a consumer that answered a no_wait request with nothing is not asked again by claims.
EMPTY_FOR = 0.005


@dataclass
class _Request:
    batch: int
    deadline: float  #: monotonic; a request not answered by then is forgotten
    got: int = 0
    no_wait: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class Buffered:
    msg: Msg
    arrived: float  #: time.monotonic(), the clock running jobs' ``started`` uses


class Feed:
    """One work consumer: our pull requests and the messages they brought."""

    def __init__(self, nc: Client, stream: str, consumer: str, rank: int, log: Logger, on_arrival: Callable[[], None]) -> None:
        self.nc = nc
        self.consumer = consumer
        self.rank = rank
        self.log = log
        self.buffer: deque[Buffered] = deque()
        self._api = api_subject(consumer_op("MSG.NEXT", stream, consumer))
        self._prefix = nc.new_inbox()
        self._requests: dict[str, _Request] = {}
        self._tokens = itertools.count(1)
        self._on_arrival = on_arrival
        self._sub: Subscription | None = None
        self.answered = 0.0  #: monotonic time the server last answered this consumer
        self.long_poll: _Request | None = None
        self.empty_until = 0.0  #: monotonic; see EMPTY_FOR
        self._refusals_logged: dict[str, float] = {}

    async def start(self) -> None:
        self._sub = await subscribe_inline(self.nc, f"{self._prefix}.*", self._on_msg)  # run in the read loop

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def _on_msg(self, msg: Msg) -> None:
        self.answered = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None and msg.reply:
            # A job. The server fills pull requests in the order it got them.
            self.buffer.append(Buffered(msg, self.answered))
            if self._requests:
                token = next(iter(self._requests))
                req = self._requests[token]
                req.got += 1
                if req.got >= req.batch:
                    self._finish(token)
            self._on_arrival()
            return
        if status == "100":  # idle heartbeat
            return
        if status not in ("404", "408"):
            # 409: max waiting exceeded, consumer deleted, leadership change; 503: no consumer leader
            # (an election, or interest not yet propagated). Logged once per REFUSAL_LOG_EVERY per status.
            # A message with neither a status nor a reply subject is no job either: logged the same way.
            now, key = time.monotonic(), status or "none"
            if now - self._refusals_logged.get(key, -REFUSAL_LOG_EVERY) >= REFUSAL_LOG_EVERY:
                self._refusals_logged[key] = now
                self.log.warning("pull.refused", consumer=self.consumer, status=key,
                                 detail=(headers.get("Description") or "").strip() or "no responders")
        token = msg.subject.rsplit(".", 1)[-1]
        asked = self._requests.get(token)
        if asked is not None and asked.no_wait and status in ("404", "408"):
            self.empty_until = self.answered + EMPTY_FOR  # it had fewer jobs than we asked for: none left
        # Only an expiry reopens a long-poll at once; a refusal (409, 503) waits for the next wait().
        self._finish(token, expired=status == "408")

    def _finish(self, token: str, expired: bool = False) -> None:
        req = self._requests.pop(token, None)
        if req is not None:
            req.done.set()
            if req is self.long_poll and expired:
                self._on_arrival()  # wake the waiter so it opens the next long-poll now

    def _expire(self) -> None:
        now = time.monotonic()
        for token, req in list(self._requests.items()):
            if now > req.deadline:
                self._finish(token)

    async def request(self, batch: int, *, expires: float | None = None) -> _Request:
        """Ask for up to ``batch`` jobs: at once (``no_wait``) or waiting up to ``expires`` seconds."""
        self._expire()
        token = str(next(self._tokens))
        body: dict = {"batch": batch}
        if expires is None:
            body["no_wait"] = True
            req = _Request(batch, time.monotonic() + ANSWER_TIMEOUT, no_wait=True)
        else:
            body["expires"] = int(expires * 1e9)
            req = _Request(batch, time.monotonic() + expires + ANSWER_TIMEOUT)
        self._requests[token] = req
        await self.nc.publish(self._api, json.dumps(body).encode(), reply=f"{self._prefix}.{token}")
        return req

    async def pull_now(self, batch: int) -> None:
        """Fill the buffer with up to ``batch`` jobs the consumer holds now."""
        req = await self.request(batch)
        with anyio.move_on_after(ANSWER_TIMEOUT):
            await req.done.wait()

    def polling(self) -> bool:
        """A long-poll is open: the server would have delivered any job into it, so an empty buffer
        means an empty consumer, without asking again."""
        return self.long_poll is not None and not self.long_poll.done.is_set() and time.monotonic() < self.long_poll.deadline

    async def ensure_long_poll(self, expires: float) -> None:
        """Keep one long-poll open, so a job arriving on this consumer wakes the bot."""
        self._expire()
        if self.long_poll is None or self.long_poll.done.is_set():
            self.long_poll = await self.request(1, expires=expires)


class Feeds:
    """The consumers a bot serves, highest priority first."""

    def __init__(self, feeds: list[Feed], fair_every: int) -> None:
        self.feeds = sorted(feeds, key=lambda f: f.rank)
        self._top = [f for f in self.feeds if f.rank == self.feeds[0].rank]  #: the highest priority's consumers
        self._lower = [f for f in self.feeds if f.rank != self.feeds[0].rank]  #: the others, highest first
        self.fair_every = fair_every
        self._starts = 0
        self._arrival = anyio.Event()
        self._direct: Callable[[Msg], bool] | None = None  #: while waiting: starts an arriving job
        self._room = 0  #: jobs the waiter may still start that way

    def arrived(self) -> None:
        """A feed buffered a job (or its long-poll ended): start it now if the bot waits, and wake the waiter."""
        if self._direct is not None:
            # Every consumer was empty when the wait began, so what comes is the best the server has,
            # with one exception accepted: a higher priority's job parsed later in the same read
            # finds the slot taken, and waits for the next one (one job's time at most).
            for feed in self.feeds:
                while feed.buffer and self._room > 0:
                    msg = feed.buffer[0].msg
                    if not self._direct(msg):
                        break  # not startable now (stopping, or a suspect reserved the bot): left buffered
                    feed.buffer.popleft()
                    self._room -= 1
                    self._starts += 1
        self._arrival.set()

    def _order(self) -> tuple[list[Feed], bool]:
        """The consumers to offer the next start to, and whether it is a fair turn (lower ones first)."""
        if not self.fair_every or not self._lower or self._starts % self.fair_every != self.fair_every - 1:
            return self.feeds, False  # the common case, once per job: nothing built
        lower = self._lower
        turn = (self._starts // self.fair_every) % len(lower)
        rotated = lower[::-1][turn:] + lower[::-1][:turn]  # low first, then normal, then low...
        return rotated + self._top, True

    async def claim(self, free: int, start: Callable[[Msg], object]) -> int:
        """Take up to ``free`` jobs, each from the first consumer in :meth:`_order` that has one, and
        ``start`` each as it is taken (before the next request goes out). Returns how many."""
        taken = 0
        asked: set[str] = set()
        while taken < free:
            order, fair = self._order()
            now = time.monotonic()
            for feed in order:
                if not feed.buffer and feed.consumer not in asked and not feed.polling() and now >= feed.empty_until:
                    asked.add(feed.consumer)
                    if taken:
                        await anyio.lowlevel.checkpoint()  # the jobs just taken start before this round trip
                    # A fair turn asks a lower priority for one job only: more would sit in this
                    # bot's buffer behind the higher work, out of other bots' reach.
                    await feed.pull_now(1 if fair and feed.rank != self.feeds[0].rank else free - taken)
                if feed.buffer:
                    start(feed.buffer.popleft().msg)
                    taken += 1
                    self._starts += 1
                    break
            else:
                break
        return taken

    async def wait(self, timeout: float, start: Callable[[Msg], bool] | None = None, room: int = 0) -> int:
        """Sleep until a long-poll brings a job, or ``timeout``; a long-poll that ends empty is reopened.

        ``start``: called with each job that arrives meanwhile, up to ``room`` of them, as it is read;
        it answers False to leave the job buffered. Returns how many it started.
        """
        self._direct, self._room = (start, room) if start is not None and room > 0 else (None, 0)
        try:
            with anyio.move_on_after(timeout):
                while not any(f.buffer for f in self.feeds) and (self._direct is None or self._room == room):
                    self._arrival = anyio.Event()
                    for feed in self.feeds:
                        await feed.ensure_long_poll(timeout)
                    await self._arrival.wait()
            return room - self._room if self._direct is not None else 0
        finally:
            self._direct, self._room = None, 0

    def buffered(self) -> list[Buffered]:
        return [b for f in self.feeds for b in f.buffer]

    def take_all_buffered(self) -> list[Msg]:
        out = [b.msg for f in self.feeds for b in f.buffer]
        for f in self.feeds:
            f.buffer.clear()
        return out

    @property
    def answered(self) -> float:
        return max((f.answered for f in self.feeds), default=0.0)
