"""The bot lifecycle state machine: a transition not in ALLOWED cannot happen.

    initializing -> registering -> health_check -> ready <-> processing
                                        ^            |          |
                                        +-- error <--+----------+
    any state but stopped -> shutting_down -> stopped

``error`` is the open circuit breaker: the server is unreachable, nothing is
claimed; the bot goes back through ``health_check`` when the server returns.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from corral.core.errors import IllegalTransitionError


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
