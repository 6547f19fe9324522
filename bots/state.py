"""The bot lifecycle state machine: a transition not in ALLOWED cannot happen.

    initializing -> registering -> health_check -> ready <-> processing
                                        ^            |          |
                                        +-- error <--+----------+
    any state but stopped -> shutting_down -> stopped

``error`` is the open circuit breaker: the server is unreachable, nothing is
claimed; the bot goes back through ``health_check`` when the server returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

import anyio

from corral.core.errors import IllegalTransitionError
from corral.core.messages import Event, EventType, encode
from corral.core.names import bot_events_subject
from corral.core.publisher import AsyncPublisher


class BotState(StrEnum):
    INITIALIZING = "initializing"  #: process started, connecting
    REGISTERING = "registering"  #: claiming its name in the liveness bucket
    HEALTH_CHECK = "health_check"  #: checking the consumer and handlers before claiming work
    READY = "ready"  #: claiming, nothing running
    PROCESSING = "processing"  #: at least one job running
    ERROR = "error"  #: circuit open (server unreachable); not claiming
    SHUTTING_DOWN = "shutting_down"  #: draining: no new claims, finishing or handing back jobs
    STOPPED = "stopped"  #: deregistered; the process exits


S = BotState
ALLOWED: dict[BotState, frozenset[BotState]] = {
    S.INITIALIZING: frozenset({S.REGISTERING, S.ERROR, S.SHUTTING_DOWN}),
    S.REGISTERING: frozenset({S.HEALTH_CHECK, S.ERROR, S.SHUTTING_DOWN}),
    S.HEALTH_CHECK: frozenset({S.READY, S.ERROR, S.SHUTTING_DOWN}),
    S.READY: frozenset({S.PROCESSING, S.ERROR, S.SHUTTING_DOWN}),
    S.PROCESSING: frozenset({S.READY, S.ERROR, S.SHUTTING_DOWN}),
    S.ERROR: frozenset({S.HEALTH_CHECK, S.SHUTTING_DOWN}),
    S.SHUTTING_DOWN: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}


class StateMachine:
    """Holds the current state; ``to()`` validates and notifies the listener."""

    def __init__(self, on_change: Callable[[BotState, BotState], None]) -> None:
        self.state = BotState.INITIALIZING
        self._on_change = on_change

    def to(self, new: BotState) -> None:
        """Move to ``new``; a no-op if already there.

        Raises:
            IllegalTransitionError: ``new`` is not reachable from the current state.
        """
        old = self.state
        if new == old:
            return
        if new not in ALLOWED[old]:
            raise IllegalTransitionError(f"bot cannot go from {old} to {new}")
        self.state = new
        self._on_change(old, new)

    def can(self, new: BotState) -> bool:
        return new == self.state or new in ALLOWED[self.state]


class Transitions:
    """Publishes a bot's state changes as ``bot_state`` events, in order.

    :meth:`put` is synchronous (the state machine's listener); the queue is drained by
    :meth:`run` while the bot runs and by :meth:`publish_queued` on the shutdown path.
    """

    def __init__(self, bot: str, incarnation: str) -> None:
        self.bot = bot
        self.incarnation = incarnation
        self._in, self._out = anyio.create_memory_object_stream[tuple[BotState, BotState]](math.inf)

    def put(self, old: BotState, new: BotState) -> None:
        self._in.send_nowait((old, new))

    async def run(self, publisher: AsyncPublisher) -> None:
        async for old, new in self._out:
            await self._publish(publisher, old, new)

    async def publish_queued(self, publisher: AsyncPublisher) -> None:
        """Publish the transitions queued so far (the shutdown path, after :meth:`run` is gone)."""
        while True:
            try:
                old, new = self._out.receive_nowait()
            except anyio.WouldBlock:
                return
            await self._publish(publisher, old, new)

    async def _publish(self, publisher: AsyncPublisher, old: BotState, new: BotState) -> None:
        event = Event(type=EventType.BOT_STATE, ts=time.time(), bot=self.bot, incarnation=self.incarnation, state=new,
                      detail=f"{old} -> {new}")
        await publisher.fire(bot_events_subject(self.bot), encode(event))
