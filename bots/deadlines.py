"""Handler deadlines, shared: one loop timer for every job due in the same short span.

Each running job's handler has a deadline (its ``timeout``) that cancels its scope.
A loop timer per job is cheap, but at thousands of jobs a second it is one timer
handle made, pushed onto the loop's heap and cancelled per job, a few per cent of
a no-op job's CPU. Deadlines here are rounded *up* to a grain of :data:`GRAIN`
seconds, and every job due in the same grain shares one timer: a job is cancelled
no earlier than its timeout and at most a grain later. A job that ends in time is
taken out of its grain's set; the grain's timer then finds nothing to cancel.
"""

from __future__ import annotations

import asyncio
import math

import anyio

#: Seconds of rounding: a timed-out handler is cancelled at most this much after its deadline.
GRAIN = 0.05


class Deadlines:
    """Cancel scopes by the loop time they are due, one timer per grain."""

    def __init__(self, grain: float = GRAIN) -> None:
        self.grain = grain
        self._due: dict[int, set[anyio.CancelScope]] = {}  #: grain number -> scopes due then

    def add(self, scope: anyio.CancelScope, timeout: float) -> int:
        """Cancel ``scope`` once ``timeout`` seconds have passed; the grain to :meth:`discard` it from."""
        loop = asyncio.get_running_loop()
        grain = math.ceil((loop.time() + timeout) / self.grain)
        scopes = self._due.get(grain)
        if scopes is None:
            scopes = self._due[grain] = set()
            loop.call_at(grain * self.grain, self._expire, grain)
        scopes.add(scope)
        return grain

    def discard(self, grain: int, scope: anyio.CancelScope) -> None:
        """The job ended before its deadline."""
        scopes = self._due.get(grain)
        if scopes is not None:
            scopes.discard(scope)

    def _expire(self, grain: int) -> None:
        for scope in self._due.pop(grain, ()):
            scope.cancel()

    def __len__(self) -> int:
        """Scopes still waiting for their deadline."""
        return sum(len(s) for s in self._due.values())
