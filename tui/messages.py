"""App-wide messages: what the feed workers learned from NATS, posted to the app.

The feed workers (``tui/feeds.py``) never touch widgets; they post these, the
app folds them into the :class:`corral.tui.store.Store`, and screens redraw from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from corral.core.fleet import HostStatus
from corral.core.dlq import DeadLetter
from corral.core.logship import LogLine
from corral.core.messages import BotHeartbeat, Event
from corral.core.status import Snapshot
from corral.tui.features import Features


@dataclass
class ConnectionChanged(Message):
    """The NATS connection went up or down (``detail`` says why, for the banner)."""

    up: bool
    detail: str = ""


@dataclass
class SnapshotTaken(Message):
    """A fresh :func:`corral.core.status.snapshot`; ``at`` is Unix seconds when it was started."""

    snapshot: Snapshot
    at: float


@dataclass
class BotBeat(Message):
    """A bot's liveness key was written."""

    beat: BotHeartbeat


@dataclass
class BotGone(Message):
    """A bot's liveness key was deleted (``DEL``: drained) or expired (``PURGE``: TTL)."""

    name: str
    operation: str


@dataclass
class EventArrived(Message):
    """One event from ``corral.events.>`` (live or read back at start)."""

    subject: str
    event: Event


@dataclass
class DeadLettersLoaded(Message):
    """The dead-letter stream's current contents (capped)."""

    letters: list[DeadLetter]


@dataclass
class ServerStats(Message):
    """The monitoring endpoint's ``/varz`` (None when unreachable)."""

    varz: dict[str, Any] | None


class FleetWritten(Message):
    """A supervisor's key or a desired count was just written to the fleet bucket."""


@dataclass
class FleetLoaded(Message):
    """:func:`corral.core.fleet.fleet_status`: one row per fleet host; ``at`` is Unix seconds when the read started."""

    rows: list[HostStatus]
    at: float
    slots: dict = field(default_factory=dict)  #: host -> its slots (``corral.tui.fleet_slots.read_slots``)


@dataclass
class FeaturesLoaded(Message):
    """Schedules, groups and locks (:mod:`corral.tui.features`); ``at`` is Unix seconds when the read started."""

    features: Features
    at: float


class LogArrived(Message):
    """One bot's or supervisor's log line (``CORRAL_LOGS``)."""

    def __init__(self, line: LogLine) -> None:
        super().__init__()
        self.line = line
