"""Leased locks for handlers: ``async with ctx.lock("invoices", lease=30):``.

A lock is the key ``$KV.corral_locks.<name>``, written with compare-and-set
(``Nats-Expected-Last-Subject-Sequence``) and a TTL (``Nats-TTL``): taking it
succeeds only if the key is absent (or a tombstone), and while held it is
renewed every lease/3 by another compare-and-set that keeps the TTL. nats-py's
``kv.update`` carries no TTL; renewing through it would make the lock immortal.
So a lock can neither be stolen (the CAS fails for anyone but the holder) nor
outlive a dead holder (its TTL runs out: at most ``lease`` seconds).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator

import anyio
import nats.js.errors
from nats.js import JetStreamContext

from core.errors import CorralError
from core.names import check_token

BUCKET = "corral_locks"
WRONG_LAST_SEQUENCE = 10071


class LockTimeoutError(CorralError):
    """Raised when a lock is still held by someone else after waiting ``wait`` seconds."""


class LockLostError(CorralError):
    """Raised (after the body) when a renewal found the lock taken: the lease lapsed."""


def _subject(name: str) -> str:
    return f"$KV.{BUCKET}.{check_token(name, 'lock name')}"


async def _try_take(js: JetStreamContext, subject: str, body: bytes, lease: float) -> int | None:
    try:
        last = await js.get_msg(f"KV_{BUCKET}", subject=subject, direct=True)
        h = last.headers or {}
        if not (h.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in h):
            return None
        expected = last.seq
    except nats.js.errors.NotFoundError:
        expected = 0
    try:
        ack = await js.publish(subject, body, headers={"Nats-Expected-Last-Subject-Sequence": str(expected), "Nats-TTL": f"{int(lease * 1000)}ms"})
    except nats.js.errors.APIError as e:
        if e.err_code == WRONG_LAST_SEQUENCE:
            return None
        raise
    return ack.seq


@contextlib.asynccontextmanager
async def lock(js: JetStreamContext, name: str, *, owner: str, lease: float = 30.0, wait: float = 30.0) -> AsyncIterator[None]:
    """Hold ``name`` for the body; wait up to ``wait`` seconds for it.

    Raises:
        LockTimeoutError: still held by another after ``wait`` seconds.
        LockLostError: a renewal failed because the lease had lapsed (the body ran unprotected).
    """
    if lease < 1:
        raise CorralError("a lock lease must be at least 1 second (the server's TTL resolution)")
    subject = _subject(name)
    body = json.dumps({"owner": owner, "since": time.time()}).encode()
    deadline = time.monotonic() + wait
    seq = await _try_take(js, subject, body, lease)
    while seq is None:
        if time.monotonic() > deadline:
            raise LockTimeoutError(f"lock {name!r} still held after {wait}s")
        await anyio.sleep(min(0.2, lease / 10))
        seq = await _try_take(js, subject, body, lease)
    lost = False
    async with anyio.create_task_group() as tg:
        async def renew() -> None:
            nonlocal seq, lost
            while True:
                await anyio.sleep(lease / 3)
                try:
                    ack = await js.publish(subject, body, headers={"Nats-Expected-Last-Subject-Sequence": str(seq), "Nats-TTL": f"{int(lease * 1000)}ms"})
                    seq = ack.seq
                except nats.js.errors.APIError as e:
                    if e.err_code == WRONG_LAST_SEQUENCE:
                        lost = True
                        return
                    raise

        tg.start_soon(renew)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        if not lost:
            with contextlib.suppress(nats.js.errors.APIError):
                await js.publish(subject, b"", headers={"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(seq)})
    if lost:
        raise LockLostError(f"lock {name!r} lapsed while held (the bot was frozen or cut off longer than the lease)")
