"""The fleet's vocabulary and read model: the ``corral_fleet`` bucket's keys, their values, and each host's status.

    $KV.corral_fleet.desired.<host>      DesiredCount     how many bots <host> should run (set by `corral scale`)
    $KV.corral_fleet.supervisor.<host>   SupervisorBeat   the supervisor's liveness (per-key TTL, claimed by CAS)

``<host>`` is the fleet's name for a machine (``corral fleet --host NAME``), a
subject token, not necessarily its hostname. A supervisor's bots are named
``<host>-<slot>`` with slots 1..N, so a restarted slot reclaims its own name.
The supervisor (:mod:`corral.bots.fleet`), `corral scale` / `corral fleet-status`
and the dashboard all read and write the bucket through this module.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from corral.core.errors import ConfigError, InvalidJobError
from corral.core.history import subject_of, walk
from corral.core.leases import is_gone
from corral.core.messages import SCHEMA_VERSION, encode
from corral.core.names import FLEET_BUCKET, FLEET_EVENTS_ACTION, FLEET_STREAM, check_token, fleet_key_subject
from corral.core.status import live_bots

__all__ = [
    "FLEET_BUCKET", "FLEET_EVENTS_ACTION", "FLEET_STREAM", "MAX_BOTS_PER_HOST", "DesiredCount", "HostStatus",
    "SlotStatus", "SupervisorBeat", "check_count", "check_host", "decode_desired", "decode_supervisor",
    "desired_key", "fleet_status", "read_desired", "slot_name", "slot_of", "supervisor_key", "write_desired",
]

MAX_BOTS_PER_HOST = 256  #: a typo guard: `corral scale 10000` is refused


def desired_key(host: str) -> str:
    return f"desired.{check_host(host)}"


def supervisor_key(host: str) -> str:
    return f"supervisor.{check_host(host)}"


def slot_name(host: str, slot: int) -> str:
    """The bot name of one slot: ``<host>-<slot>``."""
    return f"{host}-{slot}"


def slot_of(host: str, bot_name: str) -> int | None:
    """The slot number if ``bot_name`` is one of ``host``'s slots, else None."""
    m = re.fullmatch(re.escape(host) + r"-([1-9][0-9]*)", bot_name)
    return int(m.group(1)) if m else None


def check_host(host: str) -> str:
    """Return ``host`` if usable as a fleet host name (one subject token).

    Raises:
        ConfigError: it holds anything but letters, digits, ``_`` and ``-``.
    """
    try:
        return check_token(host, "fleet host")
    except InvalidJobError as e:  # a bad flag, not a bad job
        raise ConfigError(str(e)) from e


def check_count(count: int) -> int:
    """Return ``count`` if it is a usable desired bot count.

    Raises:
        ConfigError: negative or above :data:`MAX_BOTS_PER_HOST`.
    """
    if not 0 <= count <= MAX_BOTS_PER_HOST:
        raise ConfigError(f"bot count {count} must be 0-{MAX_BOTS_PER_HOST}")
    return count


class DesiredCount(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The value of ``desired.<host>``. ``ts`` is Unix seconds; ``by`` is user@host."""

    count: int
    by: str = ""
    ts: float = 0.0
    v: int = SCHEMA_VERSION


class SlotStatus(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One slot as its supervisor sees it."""

    slot: int
    name: str
    state: str  #: a :class:`corral.bots.fleet_slot.SlotState`
    pid: int | None = None
    exits: int = 0  #: unexpected exits since the slot last ran stably
    last_code: int | None = None  #: the last unexpected exit code (negative: killed by that signal)
    retry_in: float | None = None  #: seconds until the next start, while backing off
    restarts: int = 0  #: unexpected exits over the supervisor's lifetime (never reset by a stable run)
    last_exit: str = ""  #: how the last unexpected exit happened: ``exited``, ``hung`` or ``crash_loop``
    last_exit_at: float | None = None  #: Unix seconds of that exit
    started_at: float | None = None  #: Unix seconds the slot's current process started (uptime = now - this)
    crash_loop: bool = False  #: ``exits`` reached the crash-loop threshold: the slot keeps dying


class SupervisorBeat(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The value of ``supervisor.<host>``.

    ``host`` and ``pid`` say where the supervisor process runs (the machine's
    hostname), with the same meaning as in :class:`corral.core.messages.BotHeartbeat`,
    so :class:`corral.bots.liveness.Liveness` can tell a dead holder from a live one.
    """

    name: str  #: the fleet host name
    incarnation: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    desired: int = 0
    connected: bool = True
    slots: list[SlotStatus] = []
    crash_loop: list[str] = []  #: bot names of slots that keep dying, backing off
    version: str = "0.1.0"
    v: int = SCHEMA_VERSION


desired_decoder = msgspec.json.Decoder(DesiredCount)
supervisor_decoder = msgspec.json.Decoder(SupervisorBeat)


def decode_desired(data: bytes | None) -> DesiredCount | None:
    """The desired count in a key's value, or None for an empty or foreign value."""
    try:
        return desired_decoder.decode(data or b"")
    except msgspec.DecodeError:
        return None


def decode_supervisor(data: bytes | None) -> SupervisorBeat | None:
    try:
        return supervisor_decoder.decode(data or b"")
    except msgspec.DecodeError:
        return None


async def read_desired(js: JetStreamContext, host: str) -> DesiredCount | None:
    """The desired count of ``host``, or None if never set (or deleted)."""
    try:
        msg = await js.get_msg(FLEET_STREAM, subject=fleet_key_subject(desired_key(host)), direct=True)
    except nats.js.errors.NotFoundError:
        return None
    return None if is_gone(msg) else decode_desired(msg.data)


async def write_desired(js: JetStreamContext, host: str, count: int, by: str) -> DesiredCount:
    """Set the desired count of ``host`` (last writer wins; every supervisor watches its key).

    Raises:
        ConfigError: the count is out of range.
    """
    desired = DesiredCount(count=check_count(count), by=by, ts=time.time())
    await js.publish(fleet_key_subject(desired_key(host)), encode(desired), timeout=5)
    return desired


@dataclass
class HostStatus:
    """One fleet host as `corral fleet-status` and the dashboard show it."""

    host: str
    desired: int | None = None
    desired_by: str = ""
    desired_at: float | None = None
    live: list[str] = field(default_factory=list)  #: bots of this host with a live liveness key
    supervisor: str = ""  #: pid@machine, empty when none is alive
    supervisor_age: float | None = None  #: seconds since its last heartbeat
    supervisor_connected: bool | None = None
    crash_loop: list[str] = field(default_factory=list)


async def fleet_status(js) -> list[HostStatus]:
    """One row per host named by a desired count or a live supervisor."""
    hosts: dict[str, HostStatus] = {}
    now = time.time()
    async for msg in walk(js, FLEET_STREAM, fleet_key_subject(">")):
        kind, _, host = subject_of(msg).removeprefix(fleet_key_subject("")).partition(".")
        if is_gone(msg) or not host:
            continue
        row = hosts.setdefault(host, HostStatus(host))
        if kind == "desired" and (d := decode_desired(msg.data)):
            row.desired, row.desired_by, row.desired_at = d.count, d.by, d.ts
        elif kind == "supervisor" and (s := decode_supervisor(msg.data)):
            row.supervisor, row.supervisor_age = f"{s.pid}@{s.host}", round(now - s.heartbeat_at, 1)
            row.supervisor_connected, row.crash_loop = s.connected, list(s.crash_loop)
    for bot in await live_bots(js):
        for row in hosts.values():
            if slot_of(row.host, bot.name) is not None:
                row.live.append(bot.name)
    for row in hosts.values():
        row.live.sort(key=lambda name: slot_of(row.host, name) or 0)
    return sorted(hosts.values(), key=lambda r: r.host)
