"""Handing claimed jobs to a bot's worker tasks: a queue with the fewest task switches.

The pull loop claims jobs only for free slots (bots/slots.py), and there is a worker
for every slot, so a claimed job never waits for a worker: what the hand-off costs is
its own overhead, paid once per job. anyio's memory object stream makes a receiver
object, an anyio Event and a backend lookup for every wait; here a waiting worker
parks on a bare future, and a job put while one is parked resolves it directly.

A put wakes a parked worker only if none is woken already: the woken one takes what was
queued meanwhile too (:meth:`Handoff.take`), so a burst of jobs that end at once costs
one task switch, not one each. A worker about to wait on a job of its own calls
:meth:`Handoff.spread` first, so what is still queued gets another worker.

:meth:`Handoff.close` ends the stream: workers drain what is queued and then stop,
as a closed memory object stream's receivers do.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """Items from one producer to many workers, each taken once, in order.

    Items must not be None (a worker's :meth:`get` answers None when the stream has ended).
    """

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()  #: parked workers, first parked first woken
        self._woken = 0  #: workers woken that have not run yet: they will take what is queued
        self._closed = False

    def put(self, item: T) -> None:
        """Queue ``item`` and wake a parked worker if none is woken already (never blocks)."""
        if self._closed:
            raise RuntimeError("put on a closed handoff")
        self._items.append(item)
        if not self._woken:
            self._wake_one()

    def put_front(self, item: T) -> None:
        """Queue ``item`` to be taken next, by another worker (a parked one is woken)."""
        self._items.appendleft(item)
        self._wake_one()

    def take(self) -> T | None:
        """The next queued item without waiting, or None if none is queued."""
        return self._items.popleft() if self._items else None

    def spread(self) -> None:
        """The caller is about to wait on work of its own: wake a worker for what is queued."""
        if self._items and not self._woken:
            self._wake_one()

    def close(self) -> None:
        """No more items: each worker ends once the queue is empty."""
        self._closed = True
        while self._idle:
            self._wake_one()

    def __len__(self) -> int:
        return len(self._items)

    def _wake_one(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # a cancelled worker's future is done: skip it
                waiter.set_result(None)
                self._woken += 1
                return

    async def get(self) -> T | None:
        """The next item, waiting for one; None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            try:
                await waiter
            finally:
                if waiter.done() and not waiter.cancelled():
                    self._woken -= 1
        return self._items.popleft()
