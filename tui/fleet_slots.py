"""Each fleet slot as its supervisor last published it, and the exits the events tell of.

The supervisor's heartbeat (``supervisor.<host>`` in the fleet bucket, a
:class:`corral.core.fleet.SupervisorBeat`) carries its slots: state, pid,
unexpected exits in a row and over its lifetime, the last exit code and reason,
when the current process started, the crash-loop state and the backoff. The
supervisor's ``operator`` events on ``corral.events.ops.fleet`` (each names the
bot and, in ``state``, whether it ``exited``, was ``hung`` or is in a
``crash_loop``) are counted here too, for a supervisor too old to report them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext

from corral.core.fleet import FLEET_EVENTS_ACTION, FLEET_STREAM, SlotStatus, decode_supervisor
from corral.core.leases import is_gone
from corral.core.names import fleet_key_subject as key_subject
from corral.core.history import walk

EXIT_STATES = frozenset({"exited", "hung", "crash_loop"})  #: ``Event.state`` of a supervisor's exit report


@dataclass(frozen=True)
class SlotExits:
    """What the events say about one bot name's unexpected exits (as far back as the dashboard has read)."""

    count: int = 0
    last_state: str = ""  #: exited, hung or crash_loop
    last_at: float = 0.0  #: Unix seconds


async def read_slots(js: JetStreamContext) -> dict[str, list[SlotStatus]]:
    """host -> its slots, from every live supervisor heartbeat in the fleet bucket."""
    out: dict[str, list[SlotStatus]] = {}
    async for msg in walk(js, FLEET_STREAM, key_subject("supervisor.>")):
        if is_gone(msg.headers):
            continue
        beat = decode_supervisor(msg.data)
        if beat is not None:
            out[beat.name] = sorted(beat.slots, key=lambda s: s.slot)
    return out


def exits_by_bot(events: Iterable) -> dict[str, SlotExits]:
    """Count the supervisors' exit reports per bot name from the store's event rows."""
    out: dict[str, SlotExits] = {}
    for row in events:
        e = row.event
        if not row.subject.endswith(f".ops.{FLEET_EVENTS_ACTION}") or e.state not in EXIT_STATES or not e.bot:
            continue
        seen = out.get(e.bot, SlotExits())
        newer = e.ts >= seen.last_at
        out[e.bot] = SlotExits(seen.count + 1, e.state, e.ts) if newer else SlotExits(seen.count + 1, seen.last_state, seen.last_at)
    return out
