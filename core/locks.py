"""Leased locks for handlers: ``async with ctx.lock("invoices", lease=30):``.

A lock is the key ``$KV.corral_locks.<name>``, held through :mod:`corral.core.leases`:
taking it succeeds only if the key is absent (or a tombstone), and while held
it is renewed every lease/3 by a compare-and-set that keeps the TTL. So a lock
can neither be stolen (the CAS fails for anyone but the holder) nor outlive a
dead holder (its TTL runs out: at most ``lease`` seconds).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import anyio
from nats.js import JetStreamContext

from corral.core import leases
from corral.core.errors import CorralError
from corral.core.names import LOCKS_BUCKET, check_token

BUCKET = LOCKS_BUCKET


class LockTimeoutError(CorralError):
    """Raised when a lock is still held by someone else after waiting ``wait`` seconds."""


class LockLostError(CorralError):
    """Raised (after the body) when a renewal found the lock taken: the lease lapsed."""


@contextlib.asynccontextmanager
async def lock(js: JetStreamContext, name: str, *, owner: str, lease: float = 30.0, wait: float = 30.0) -> AsyncIterator[None]:
    """Hold ``name`` for the body; wait up to ``wait`` seconds for it.

    Raises:
        LockTimeoutError: still held by another after ``wait`` seconds.
        LockLostError: a renewal failed because the lease had lapsed (the body ran unprotected).
    """
    if lease < leases.MIN_TTL:
        raise CorralError("a lock lease must be at least 1 second (the server's TTL resolution)")
    key = check_token(name, "lock name")
    body = leases.holder_body(owner)
    deadline = time.monotonic() + wait
    seq = await leases.take(js, BUCKET, key, body, lease)
    while seq is None:
        if time.monotonic() > deadline:
            raise LockTimeoutError(f"lock {name!r} still held after {wait}s")
        await anyio.sleep(min(0.2, lease / 10))
        seq = await leases.take(js, BUCKET, key, body, lease)
    async with leases.keep(js, BUCKET, key, body, seq, lease) as held:
        yield
    if held.lost:
        raise LockLostError(f"lock {name!r} lapsed while held (the bot was frozen or cut off longer than the lease)")
