"""Fairness across keys (tenants): the waiting lines, operator weights and per-key caps.

A job with a fairness key is not published to the jobs stream but to its key's own
subject of ``CORRAL_FAIR``, ``corral.fair.<queue>.<priority>.<key>`` (core/names.py).
One dispatcher at a time (bots/dispatcher.py) moves them into ``corral.jobs.<queue>.<priority>``
in turn over the keys that have work, so one key's flood queues behind its own subject and
never in front of another key's jobs.

Why it scales to thousands of keys: a key is only a subject, not a consumer. The keys with
work and their counts come from one ``STREAM.INFO`` with ``subjects_filter`` (the server keeps
per-subject counts anyway), and a key's next job is one direct get (``next_by_subj``).

Operator settings live in the ``corral_limits`` bucket beside the kinds' limits:

* ``fair.def.<key>``: the key's :class:`FairDef` (weight: starts per round; cap: jobs running
  at once, fleet-wide). A key without one has weight 1 and no cap.
* ``fair.slot.<key>.<i>``: a cap slot, leased by the bot running a job of the key, exactly
  like a kind's concurrency slot (core/limits.py), so the cap holds even across a dispatcher
  failover. The dispatcher reads the held slots and dispatches no more than the free ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core import leases
from corral.core.errors import ConfigError, MissingResourceError
from corral.core.history import subject_of, walk
from corral.core.jsapi import api
from corral.core.limits import BUCKET, DEFAULT_LEASE, FREE, Admitted, Throttled, throttle_delay
from corral.core.names import FAIR_STREAM, FAIR_SUBJECT, check_token, kv_stream, kv_subject, parse_fair_subject, stream_op

#: The header the dispatcher puts on a moved job: the key it waited under (the subject's truth).
KEY_HEADER = "Corral-Fair-Key"
MAX_WEIGHT = 1000
MAX_CAP = 1000  #: a full key costs one read per slot to find out, as for kinds
#: Seconds a bot or the dispatcher keeps the definitions before reading them again.
REFRESH = 2.0


class FairDef(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A key's settings, the value of ``fair.def.<key>``."""

    #: Starts the key gets per round while other keys have work too.
    weight: int = 1
    #: At most this many of the key's jobs run at once across the fleet (None: no cap).
    cap: int | None = None

    def validate(self) -> FairDef:
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise ConfigError(f"weight {self.weight} must be 1-{MAX_WEIGHT}")
        if self.cap is not None and not 1 <= self.cap <= MAX_CAP:
            raise ConfigError(f"cap {self.cap} must be 1-{MAX_CAP}")
        return self


DEFAULT = FairDef()
_decoder = msgspec.json.Decoder(FairDef)


def def_key(key: str) -> str:
    return f"fair.def.{key}"


def slot_key(key: str, i: int | str) -> str:
    return f"fair.slot.{key}.{i}"


def _decode(data: bytes | None) -> FairDef:
    try:
        return _decoder.decode(data or b"")
    except msgspec.DecodeError:
        return DEFAULT  # an unreadable definition is the default (an operator must fix it)


# -- the waiting lines ------------------------------------------------------------------------


async def waiting(nc: NATS, subjects: str = FAIR_SUBJECT) -> dict[str, int]:
    """Every fair subject with jobs waiting, and how many (the server's per-subject state, paged)."""
    out: dict[str, int] = {}
    offset = 0
    while True:
        info = await api(nc, stream_op("INFO", FAIR_STREAM), {"subjects_filter": subjects, "offset": offset})
        page = (info.get("state") or {}).get("subjects") or {}
        out.update(page)
        offset += len(page)
        if not page or offset >= int(info.get("total") or 0):
            return out


def by_key(counts: dict[str, int]) -> dict[str, int]:
    """Waiting counts summed per key over every queue and priority."""
    out: dict[str, int] = {}
    for subject, n in counts.items():
        parsed = parse_fair_subject(subject)
        if parsed is not None:
            out[parsed[2]] = out.get(parsed[2], 0) + n
    return out


# -- the operator's side (`corral fair`) ------------------------------------------------------


async def definitions(js: JetStreamContext) -> dict[str, FairDef]:
    """Every key with settings (one walk of ``fair.def.*``; keys without one are the default)."""
    out = {}
    async for msg in walk(js, kv_stream(BUCKET), kv_subject(BUCKET, def_key("*"))):
        if not leases.is_gone(msg):
            out[subject_of(msg).rsplit(".", 1)[-1]] = _decode(msg.data)
    return out


async def definition(js: JetStreamContext, key: str) -> FairDef:
    msg = await leases.read(js, BUCKET, def_key(key))
    return DEFAULT if msg is None or leases.is_gone(msg) else _decode(msg.data)


async def configure(js: JetStreamContext, key: str, *, weight: int | None = None, cap: int | None = None,
                    uncap: bool = False) -> FairDef:
    """Change a key's weight and/or cap (``uncap`` removes the cap); returns the new settings.

    Raises:
        InvalidJobError: the key cannot be a subject token.
        ConfigError: a value is out of range.
        MissingResourceError: the bucket is not provisioned.
    """
    check_token(key, "fairness key")
    current = await definition(js, key)
    new = FairDef(weight=current.weight if weight is None else weight,
                  cap=None if uncap else current.cap if cap is None else cap).validate()
    try:
        await js.publish(kv_subject(BUCKET, def_key(key)), msgspec.json.encode(new))
    except nats.errors.NoRespondersError as e:
        raise MissingResourceError(f"the {BUCKET} bucket is missing: run `corral provision`") from e
    return new


async def held_slots(js: JetStreamContext, key: str) -> int:
    """How many of the key's cap slots are held now (its jobs running under a cap)."""
    n = 0
    async for msg in walk(js, kv_stream(BUCKET), kv_subject(BUCKET, slot_key(key, "*"))):
        n += not leases.is_gone(msg)
    return n


@dataclass
class KeyStatus:
    key: str
    waiting: int = 0
    running: int | None = None  #: held cap slots; None for a key without a cap (not counted)
    weight: int = 1
    cap: int | None = None

    def as_dict(self) -> dict:
        return {"key": self.key, "waiting": self.waiting, "running": self.running, "weight": self.weight, "cap": self.cap}


async def status(nc: NATS, js: JetStreamContext) -> list[KeyStatus]:
    """Every key with jobs waiting or settings: waiting count, running (capped keys), weight, cap."""
    counts = by_key(await waiting(nc))
    defs = await definitions(js)
    rows = []
    for key in sorted(set(counts) | set(defs)):
        d = defs.get(key, DEFAULT)
        running = await held_slots(js, key) if d.cap else None
        rows.append(KeyStatus(key, counts.get(key, 0), running, d.weight, d.cap))
    return rows


# -- the bot's side: the cap at start time -----------------------------------------------------


@dataclass
class Caps:
    """A bot's view of the keys' caps, definitions cached ``refresh`` seconds."""

    js: JetStreamContext
    refresh: float = REFRESH
    _defs: dict[str, tuple[float, FairDef]] = field(default_factory=dict)

    async def cap_of(self, key: str) -> int | None:
        now = time.monotonic()
        cached = self._defs.get(key)
        if cached is None or now - cached[0] >= self.refresh:
            cached = (now, await definition(self.js, key))
            self._defs[key] = cached
        return cached[1].cap

    async def admit(self, key: str, owner: str, throttles: int, lease: float = DEFAULT_LEASE) -> Admitted | Throttled:
        """Take one of the key's cap slots (FREE without a cap), or say how long to wait."""
        cap = await self.cap_of(key)
        if not cap:
            return FREE
        slot = await leases.take_slot(self.js, BUCKET, lambda i: slot_key(key, i), cap, owner, lease)
        if slot is not None:
            return Admitted.of(self.js, slot, lease)
        return Throttled(f"fairness key {key} is at its cap of {cap} running", throttle_delay(throttles))


class _Held:
    def __init__(self, held: list) -> None:
        self.held = held

    @property
    def lost(self) -> bool:
        return any(lease.lost for lease in self.held)


@dataclass(frozen=True)
class Joint(Admitted):
    """The kind's admission and the key's cap slot, held together for the run."""

    parts: tuple[Admitted, Admitted] = (FREE, FREE)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[_Held]:  # type: ignore[override]  # callers read only .lost, which both have
        async with self.parts[0].held() as a, self.parts[1].held() as b:
            yield _Held([lease for lease in (a, b) if lease is not None])
