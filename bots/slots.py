"""A bot's slots: how many handlers run at once, and how many finished jobs wait for their record.

``--concurrency N`` bounds the *handlers* running at once. A job whose handler has
returned still holds its delivery until its result is committed and the job acked
(bots/record.py, bots/commit.py): seconds-per-result of waiting, and on a server that
fsyncs every write, most of a no-op job's life. If that wait kept its handler slot, a
bot whose every slot had finished would claim nothing while one commit round was in
flight; the next round could only form from jobs that finished *during* it, and a
fast bot would spend most of its time with every slot waiting on the disk.

So a job takes two things when it is claimed: a handler slot, given back as soon as
its handler returns (:meth:`Hold.ran`), and a place among the jobs held, given back
when it is settled (:meth:`Hold.settled`). The places number ``concurrency`` plus
:data:`COMMIT_DEPTH`, so up to that many finished jobs wait for their commit while
new ones run; a group commit then has a full round ready each time the previous one
is answered. A one-slot bot holds no more than its one job: a death there must be
the running job's own (bots/inflight.py, poison isolation).
"""

from __future__ import annotations

import anyio

#: Finished jobs that may wait for their result's commit beyond the handler slots (one commit
#: round's worth: bots/commit.py's MAX_BATCH). Every held job is still counted in the heartbeat's
#: ``current`` and kept alive by in-progress acks.
COMMIT_DEPTH = 512


class Hold:
    """One claimed job's share of the slots: its handler slot until it ran, its place until settled."""

    __slots__ = ("_running", "_slots")

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._running = True

    def ran(self) -> None:
        """The handler returned (or never ran): its slot goes to the next job. Idempotent."""
        if self._running:
            self._running = False
            self._slots.handlers.release()

    def settled(self) -> None:
        """The job is acked, nak'd or handed back: its place goes too."""
        self.ran()
        self._slots.places.release()


class Slots:
    """The handler slots and the places for held jobs, taken together by the pull loop."""

    def __init__(self, concurrency: int, commit_depth: int = COMMIT_DEPTH) -> None:
        self.concurrency = concurrency
        self.depth = commit_depth if concurrency > 1 else 0
        self.handlers = anyio.Semaphore(concurrency)
        self.places = anyio.Semaphore(concurrency + self.depth)

    @property
    def workers(self) -> int:
        """Worker tasks needed so that every held job has one: a job waiting for its commit keeps its worker."""
        return self.concurrency + self.depth

    async def take(self) -> int:
        """Wait for one free handler slot and place, then take every other free pair; how many."""
        await self.handlers.acquire()
        await self.places.acquire()
        free = 1
        while free < self.concurrency and self.handlers.value > 0 and self.places.value > 0:
            self.handlers.acquire_nowait()
            self.places.acquire_nowait()
            free += 1
        return free

    def give_back(self, unused: int) -> None:
        """Return what :meth:`take` took but no job came for."""
        for _ in range(unused):
            self.handlers.release()
            self.places.release()

    def hold(self) -> Hold:
        """A claimed job's share, for its worker to give back as the job goes."""
        return Hold(self)
