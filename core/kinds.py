"""Which job kinds the live fleet serves, from the ``kinds`` every bot advertises in its heartbeat.

A job of a kind no bot serves is not lost: it waits, and a bot started later with
that handler runs it. But a typo (``corral submit smu``) would otherwise be
retried by every bot and dead-lettered as ``UnknownKindError`` minutes later, so
submitters ask here first and warn. When no bot runs at all nothing can be
concluded: the jobs wait for bots, which is normal at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext

from corral.core.status import live_bots


@dataclass(frozen=True)
class Coverage:
    bots: int  #: live bots seen
    kinds: frozenset[str] = field(default_factory=frozenset)  #: every kind some live bot advertises
    #: Some live bot advertises no kinds (older than the field): it may serve anything.
    unknown_bots: bool = False

    def serves(self, kind: str) -> bool | None:
        """True or False when the live bots tell; None when they cannot (no bots, or old bots)."""
        if self.bots == 0 or (self.unknown_bots and kind not in self.kinds):
            return None
        return kind in self.kinds


async def coverage(js: JetStreamContext) -> Coverage:
    """What the bots whose liveness key is present serve now.

    Raises:
        TransportError: the server did not answer.
    """
    beats = await live_bots(js)
    return Coverage(bots=len(beats), kinds=frozenset(k for b in beats for k in b.kinds),
                    unknown_bots=any(not b.kinds for b in beats))
