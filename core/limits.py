"""Fleet-wide limits per job kind: a concurrency cap and a rate, held across every bot.

Everything lives in the KV bucket ``corral_limits`` (``streams/kv-limits.json``),
written with compare-and-set and per-message TTLs through :mod:`corral.core.leases`,
the same technique as the leased locks:

* ``def.<kind>``: the kind's :class:`LimitDef`, set by `corral limit set`.
* ``slot.<kind>.<i>`` for i in 0..concurrency-1: a concurrency slot. A bot takes
  a free one (CAS on "absent", TTL = the lease) before it runs a job of the kind,
  renews it every lease/3 while the handler runs (CAS keeping the TTL), and
  deletes it when the job ends, whatever the outcome. A bot killed while holding
  one frees it when the lease runs out.
* ``rate.<kind>.<window>``: how many jobs of the kind started in the fixed window
  ``floor(now / per)``, incremented by CAS (retried on conflict), with a TTL of
  two windows so old windows vanish. A fixed window admits ``rate`` starts per
  window, which is up to ``2 * rate`` within ``per`` seconds across a window
  boundary (docs/features.md). Windows follow each bot's clock: keep bots on NTP.

A job over a limit is not run: the bot naks it with a delay from
:func:`throttle_delay` and records a ``throttled`` event; that delivery does not
count as an attempt (``bots/execute.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import time
from dataclasses import dataclass, field

import anyio
import msgspec
import nats.errors
from nats.js import JetStreamContext

from corral.core import leases
from corral.core.connect import TRANSIENT
from corral.core.errors import ConfigError, InvalidJobError, MissingResourceError
from corral.core.history import subject_of, walk
from corral.core.names import LIMITS_BUCKET, check_token, kv_stream, kv_subject

__all__ = ["Admitted", "LimitDef", "LimitStatus", "Limiter", "Throttled", "list_limits", "parse_rate", "remove_limit",
           "set_limit", "throttle_delay"]

BUCKET = LIMITS_BUCKET
#: Seconds a bot keeps a kind's definition before reading it again.
REFRESH = 2.0
#: Seconds a concurrency slot outlives a bot that died holding it (default).
DEFAULT_LEASE = 30.0
MAX_CONCURRENCY = 1000  #: a full kind costs one read per slot to find out, so caps stay modest
#: Throttle delays grow from BASE by GROWTH per throttle up to CAP seconds: about 48 minutes of
#: throttling before a job reaches the consumer's max_deliver backstop (110 deliveries).
THROTTLE_BASE = 0.2
THROTTLE_GROWTH = 1.5
THROTTLE_CAP = 30.0
CAS_TRIES = 5  #: conflicting increments of one rate window before the start is throttled instead

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class LimitDef(msgspec.Struct, kw_only=True):
    """A kind's limits, the value of ``def.<kind>``. ``per`` and ``lease`` are in seconds."""

    #: At most this many jobs of the kind run at once across the fleet (None: no cap).
    concurrency: int | None = None
    #: At most this many jobs of the kind start per ``per``-second window (None: no rate).
    rate: int | None = None
    per: float = 1.0
    #: How long a slot outlives a bot that died holding it.
    lease: float = DEFAULT_LEASE

    def validate(self) -> LimitDef:
        """Return self if usable.

        Raises:
            ConfigError: no limit at all, or a value out of range.
        """
        if self.concurrency is None and self.rate is None:
            raise ConfigError("a limit needs --concurrency N and/or --rate N/PERIOD (`corral limit rm` removes one)")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency {self.concurrency} must be 1-{MAX_CONCURRENCY}")
        if self.rate is not None and self.rate < 1:
            raise ConfigError(f"rate {self.rate} must be at least 1 per period")
        if not 0.1 <= self.per <= 86_400:
            raise ConfigError(f"a rate period of {self.per}s must be 100ms-24h")
        if not leases.MIN_TTL <= self.lease <= 3600:
            raise ConfigError(f"a slot lease of {self.lease}s must be 1-3600 seconds")
        return self

    def describe(self) -> str:
        parts = [f"concurrency {self.concurrency}"] if self.concurrency else []
        if self.rate:
            parts.append(f"rate {self.rate}/{period_text(self.per)}")
        return ", ".join(parts)


_decoder = msgspec.json.Decoder(LimitDef)


def parse_rate(text: str) -> tuple[int, float]:
    """``"5/1s"``, ``"100/1m"``, ``"5/s"``, ``"10/500ms"``: (starts, period in seconds).

    Raises:
        ConfigError: not of the form N/PERIOD.
    """
    m = _RATE.match(text or "")
    if not m:
        raise ConfigError(f"rate {text!r} is not N/PERIOD, e.g. 5/1s, 100/1m, 10/500ms")
    count, amount, unit = int(m.group(1)), float(m.group(2) or 1), m.group(3)
    return count, amount * _UNIT[unit]


def period_text(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def window(now: float, per: float) -> int:
    """The fixed rate window ``now`` (Unix seconds) falls in."""
    return math.floor(now / per)


def throttle_delay(throttles: int, wait: float = 0.0, spread: float = 0.0) -> float:
    """Seconds before a throttled job is offered again.

    At least ``wait`` (a rate limit: until its next window) plus up to ``spread`` of jitter, and at
    least a backoff that grows with the job's earlier ``throttles`` (0.2 s by 1.5x, with jitter,
    up to 30 s). The growth keeps a long-throttled job under the consumer's max_deliver backstop
    for about 48 minutes instead of burning a delivery every window.
    """
    backoff = min(THROTTLE_BASE * THROTTLE_GROWTH ** throttles * (0.75 + random.random() / 2), THROTTLE_CAP)
    return max(wait + random.random() * spread, backoff)


def _def_key(kind: str) -> str:
    return f"def.{kind}"


def _slot_key(kind: str, i: int | str) -> str:
    return f"slot.{kind}.{i}"


def _rate_key(kind: str, w: int) -> str:
    return f"rate.{kind}.{w}"


@dataclass(frozen=True)
class Throttled:
    """A job over a limit: not run; offered again after ``delay`` seconds."""

    reason: str
    delay: float


@dataclass(frozen=True)
class Admitted:
    """A job within its kind's limits; :meth:`held` holds its concurrency slot, if it took one."""

    js: JetStreamContext | None = field(default=None, repr=False)
    slot: str | None = None
    seq: int = 0
    body: bytes = b""
    lease: float = DEFAULT_LEASE

    @classmethod
    def of(cls, js: JetStreamContext, slot: leases.Slot, lease: float) -> Admitted:
        """Admitted holding ``slot`` (from :func:`corral.core.leases.take_slot`), renewed every lease/3."""
        return cls(js, slot.key, slot.seq, slot.body, lease)

    def held(self) -> contextlib.AbstractAsyncContextManager[leases.Lease | None]:
        """Renew the slot while the body runs and release it after, however the body ends.

        Nothing leased (most jobs), a plain ``nullcontext``: a generator-based context manager
        per job was a measurable share of a no-op job's CPU.
        """
        if self.js is None or self.slot is None:
            return _NOTHING_HELD
        return leases.keep(self.js, BUCKET, self.slot, self.body, self.seq, self.lease)


_NOTHING_HELD: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()


FREE = Admitted()


class Limiter:
    """A bot's side: admits jobs against their kind's limits, definitions cached ``refresh`` seconds."""

    def __init__(self, js: JetStreamContext, refresh: float = REFRESH) -> None:
        self.js = js
        self.refresh = refresh
        self._defs: dict[str, tuple[float, LimitDef | None]] = {}

    async def definition(self, kind: str) -> LimitDef | None:
        """The kind's limits (None: unlimited), read at most every ``refresh`` seconds.

        A kind that cannot be a subject token can have no limit, and is never looked up.
        A failed read keeps the last known definition.
        """
        now = time.monotonic()
        cached = self._defs.get(kind)
        if cached is not None and now - cached[0] < self.refresh:
            return cached[1]  # the common case, per job: no token check, no read
        if not _is_token(kind):
            return None
        try:
            msg = await leases.read(self.js, BUCKET, _def_key(kind))
        except TRANSIENT:
            if cached is None:
                raise
            return cached[1]
        d = None if msg is None or leases.is_gone(msg) else _decode(msg.data)
        self._defs[kind] = (now, d)
        return d

    def known_unlimited(self, kind: str) -> bool:
        """Whether ``kind`` is known, without a read, to have no limits (a fresh cached answer)."""
        cached = self._defs.get(kind)
        return cached is not None and cached[1] is None and time.monotonic() - cached[0] < self.refresh

    async def admit(self, kind: str, owner: str, throttles: int = 0) -> Admitted | Throttled:
        """Take a concurrency slot and count a start in the rate window, or say how long to wait.

        ``owner`` is recorded in the slot (bot/job); ``throttles``: the job's earlier throttles.
        The slot is taken first, so a job refused by the rate never spends a window's start.
        """
        d = await self.definition(kind)
        if d is None:
            return FREE
        admitted = FREE
        if d.concurrency:
            slot = await leases.take_slot(self.js, BUCKET, lambda i: _slot_key(kind, i), d.concurrency, owner, d.lease)
            if slot is None:
                return Throttled(f"concurrency cap {d.concurrency} reached for kind {kind}", throttle_delay(throttles))
            admitted = Admitted.of(self.js, slot, d.lease)
        if d.rate:
            try:
                wait = await self._count_start(kind, d.rate, d.per)
            except BaseException:
                await self._give_back(admitted)
                raise
            if wait is not None:
                await self._give_back(admitted)
                return Throttled(f"rate {d.rate}/{period_text(d.per)} reached for kind {kind}",
                                 throttle_delay(throttles, wait, spread=d.per))
        return admitted

    async def _give_back(self, admitted: Admitted) -> None:
        if admitted.slot is not None:
            with anyio.CancelScope(shield=True):
                await leases.delete_if(self.js, BUCKET, admitted.slot, admitted.seq)

    async def _count_start(self, kind: str, rate: int, per: float) -> float | None:
        """Count one start in the current window; None if counted, else seconds to the next window."""
        now = time.time()
        w = window(now, per)
        key = _rate_key(kind, w)
        for _ in range(CAS_TRIES):
            last = await leases.read(self.js, BUCKET, key)
            count = 0 if last is None or leases.is_gone(last) else int(last.data or b"0")
            if count >= rate:
                return (w + 1) * per - now
            if await leases.put_if(self.js, BUCKET, key, str(count + 1).encode(), leases.revision(last), 2 * per) is not None:
                return None
        return 0.0  # lost every race for the window: try again shortly (the backoff applies)


def _is_token(kind: str) -> bool:
    try:
        check_token(kind, "kind")
    except InvalidJobError:
        return False
    return True


def _decode(data: bytes | None) -> LimitDef | None:
    try:
        return _decoder.decode(data or b"")
    except msgspec.DecodeError:
        return None  # a definition this bot cannot read limits nothing (an operator must fix it)


# -- the operator's side (`corral limit`) ----------------------------------------------------


@dataclass
class LimitStatus:
    """A kind's definition and its usage right now, for `corral limit list`."""

    kind: str
    limit: LimitDef
    slots_held: int = 0
    holders: list[str] = field(default_factory=list)  #: owners (bot/job) of the held slots
    window_count: int = 0  #: starts counted in the current rate window

    def as_dict(self) -> dict:
        return {"kind": self.kind, **msgspec.structs.asdict(self.limit), "slots_held": self.slots_held,
                "holders": self.holders, "window_count": self.window_count}


async def set_limit(js: JetStreamContext, kind: str, limit: LimitDef) -> None:
    """Create or replace the kind's whole definition (bots see it within :data:`REFRESH` seconds).

    Raises:
        ConfigError: a value is out of range.
        InvalidJobError: the kind cannot be a subject token.
        MissingResourceError: the bucket is not provisioned.
    """
    check_token(kind, "kind")
    limit.validate()
    await _publish(js, _def_key(kind), msgspec.json.encode(limit))


async def remove_limit(js: JetStreamContext, kind: str) -> bool:
    """Remove the kind's limits; False if it had none. Slots held now are released as their jobs end."""
    check_token(kind, "kind")
    last = await leases.read(js, BUCKET, _def_key(kind))
    if last is None or leases.is_gone(last):
        return False
    await _publish(js, _def_key(kind), b"", {"KV-Operation": "DEL"})
    return True


async def list_limits(js: JetStreamContext) -> list[LimitStatus]:
    """Every kind with limits, with slots held and this window's start count."""
    out = []
    async for msg in walk(js, kv_stream(BUCKET), kv_subject(BUCKET, _def_key("*"))):
        limit = None if leases.is_gone(msg) else _decode(msg.data)
        if limit is not None:
            out.append(await _status(js, subject_of(msg).rsplit(".", 1)[-1], limit))
    return sorted(out, key=lambda s: s.kind)


async def _status(js: JetStreamContext, kind: str, limit: LimitDef) -> LimitStatus:
    status = LimitStatus(kind, limit)
    async for msg in walk(js, kv_stream(BUCKET), kv_subject(BUCKET, _slot_key(kind, "*"))):
        if not leases.is_gone(msg):
            status.slots_held += 1
            status.holders.append(json.loads(msg.data or b"{}").get("owner", "?"))
    if limit.rate:
        last = await leases.read(js, BUCKET, _rate_key(kind, window(time.time(), limit.per)))
        status.window_count = 0 if last is None or leases.is_gone(last) else int(last.data or b"0")
    return status


async def _publish(js: JetStreamContext, key: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    try:
        await js.publish(kv_subject(BUCKET, key), body, headers=headers)
    except nats.errors.NoRespondersError as e:
        raise MissingResourceError(f"the {BUCKET} bucket is missing: run `corral provision`") from e
