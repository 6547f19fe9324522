"""Keys written with compare-and-set and a per-message TTL: the primitive under locks and limits.

A key is the subject ``$KV.<bucket>.<key>`` of a KV bucket declared with
``allow_msg_ttl`` (``streams/kv-*.json``). Every write here is a raw publish
carrying ``Nats-Expected-Last-Subject-Sequence`` (compare-and-set: the server
refuses it with ``STREAM_WRONG_LAST_SEQUENCE`` if anyone wrote the key since) and ``Nats-TTL``
(the server removes the value after that long and leaves a delete marker).

* :func:`take` creates a key only if it is absent, deleted or expired.
* :func:`put_if` overwrites a key only if it is still at the sequence we read.
* :func:`take_slot` takes any free one of N numbered keys (a concurrency slot).
* :func:`keep` holds a taken key while a body runs: it renews every ttl/3 by
  compare-and-set *keeping the TTL*, then deletes it by compare-and-set.
  nats-py's ``kv.update`` carries no TTL; renewing through it would make the key
  immortal. So a held key can neither be stolen (anyone else's CAS fails) nor
  outlive a dead holder by more than its TTL.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.kv import KeyValue

from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError, ErrorCode
from corral.core.history import seq_of
from corral.core.log import Logger
from corral.core.names import kv_stream, kv_subject

#: Headers that turn a write into a delete (watchers see a ``DEL``).
DELETE = {"KV-Operation": "DEL"}
#: The server's TTL is kept in whole milliseconds but expires keys on a roughly 1 s tick.
MIN_TTL = 1.0


def ttl_header(seconds: float) -> str:
    """A ``Nats-TTL`` value. nats-py's ``msg_ttl`` sends ``str(int(ttl))``, which turns 1.5 into "1"."""
    return f"{int(seconds * 1000)}ms"


#: ``KV-Operation`` values that remove a key (a KV watch reports a TTL-expiry marker as PURGE).
GONE_OPERATIONS = ("DEL", "PURGE")


def is_gone(item: RawStreamMsg | KeyValue.Entry | Mapping[str, str] | None) -> bool:
    """True if the key holds nothing: a tombstone (``DEL``/``PURGE``) or the server's expiry marker.

    ``item`` is a stream message (a direct get or a walk), its headers, or a KV watch entry.
    The one tombstone check: every reader of a KV key asks it, never the headers themselves.
    """
    if isinstance(item, KeyValue.Entry):
        return item.operation in GONE_OPERATIONS
    headers = item if item is None or isinstance(item, Mapping) else item.headers
    h = headers or {}
    return h.get("KV-Operation") in GONE_OPERATIONS or "Nats-Marker-Reason" in h


async def read(js: JetStreamContext, bucket: str, key: str, *, leader: bool = False) -> RawStreamMsg | None:
    """The key's last message (a value, a tombstone or a marker), or None if it never had one.

    A missing bucket reads as None too: callers treat "never written" and "not provisioned" alike.
    ``leader``: see :func:`read_subject`.
    """
    return await read_subject(js, kv_stream(bucket), kv_subject(bucket, key), leader=leader)


async def read_subject(js: JetStreamContext, stream: str, subject: str, *, leader: bool = False) -> RawStreamMsg | None:
    """:func:`read` by the key's stream and subject.

    By default a direct get, which any replica answers: cheap, but a replica that is still
    catching up (a node back from a partition) answers with an old value. ``leader=True``
    asks the stream leader, the one that judges compare-and-set, so a read taken to decide
    the next compare-and-set sees what that compare-and-set will be checked against.
    """
    try:
        return await js.get_msg(stream, subject=subject, direct=not leader)
    except nats.js.errors.NotFoundError:
        return None


def revision(last: RawStreamMsg | None) -> int:
    """The sequence to compare-and-set a key against, given its :func:`read`: 0 if it was never written."""
    return 0 if last is None else seq_of(last)


async def put_if(js: JetStreamContext, bucket: str, key: str, body: bytes, expected: int, ttl: float | None) -> int | None:
    """Write ``body`` if the key's last sequence is still ``expected`` (0: never written).

    Returns the new sequence, or None if someone else wrote first. ``ttl`` in seconds (None: no TTL).
    """
    return await publish_if(js, kv_subject(bucket, key), body, expected, ttl)


async def publish_if(
    js: JetStreamContext, subject: str, body: bytes, expected: int, ttl: float | None, headers: dict[str, str] | None = None,
) -> int | None:
    """:func:`put_if` by the key's subject; ``headers`` are added (``KV-Operation: DEL`` deletes).

    Raises:
        nats.js.errors.APIError: any refusal other than a lost compare-and-set.
        TimeoutError, nats.errors.Error: the server did not acknowledge (see ``TRANSIENT``).
    """
    sent = {"Nats-Expected-Last-Subject-Sequence": str(expected), **(headers or {})}
    if ttl is not None:
        sent["Nats-TTL"] = ttl_header(max(ttl, MIN_TTL))
    try:
        ack = await js.publish(subject, body, headers=sent)
    except nats.js.errors.APIError as e:
        if e.err_code == ErrorCode.STREAM_WRONG_LAST_SEQUENCE:
            return None
        raise
    return ack.seq


async def take(js: JetStreamContext, bucket: str, key: str, body: bytes, ttl: float) -> int | None:
    """Create the key with a TTL if it holds nothing; returns its sequence, or None if it is held."""
    last = await read(js, bucket, key)
    if last is not None and not is_gone(last):
        return None
    return await put_if(js, bucket, key, body, revision(last), ttl)


def holder_body(owner: str) -> bytes:
    """The value a holder writes into a key it takes: who holds it (``bot/job``) and since when."""
    return json.dumps({"owner": owner, "since": time.time()}).encode()


@dataclass(frozen=True)
class Slot:
    """One of N numbered keys, taken by :func:`take_slot`: its key, the sequence it was taken at, its value."""

    key: str
    seq: int
    body: bytes


async def take_slot(js: JetStreamContext, bucket: str, key_of: Callable[[int], str], count: int, owner: str,
                    ttl: float) -> Slot | None:
    """Take the first free of the keys ``key_of(0)`` .. ``key_of(count - 1)`` for ``owner``; None if all are held.

    A kind's concurrency slots and a fairness key's cap slots are each such a numbered set.
    """
    body = holder_body(owner)
    first = random.randrange(count)  # not slot 0 for everyone: holders racing for one set spread over it
    for i in range(count):
        key = key_of((first + i) % count)
        seq = await take(js, bucket, key, body, ttl)
        if seq is not None:
            return Slot(key, seq, body)
    return None


async def delete_if(js: JetStreamContext, bucket: str, key: str, expected: int) -> None:
    """Delete the key if it is still at ``expected`` (a lapsed key is left to its new holder)."""
    with contextlib.suppress(nats.js.errors.APIError, *TRANSIENT):
        await publish_if(js, kv_subject(bucket, key), b"", expected, None, DELETE)


@dataclass
class Lease:
    """A key held by :func:`keep`. ``lost``: a renewal found it rewritten (the TTL had lapsed)."""

    key: str
    seq: int
    lost: bool = False


async def in_turn(js: JetStreamContext, bucket: str, key: str, owner: str, ttl: float,
                  term: Callable[[Lease], Awaitable[None]], log: Logger, what: str) -> None:
    """Forever, one holder at a time across processes: take ``key``, run ``term(lease)`` while it is
    held (``term`` ends when ``lease.lost``), and try again every ttl/2 seconds.

    The key's value names the holder (owner, host, pid, since). Failures of a term are logged as
    ``<what>.failed`` and the next term starts after the wait; cancellation ends the loop.
    """
    while True:
        body = json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()
        try:
            seq = await take(js, bucket, key, body, ttl)
            if seq is not None:
                log.info(f"{what}.lease_taken", key=key)
                async with keep(js, bucket, key, body, seq, ttl) as lease:
                    await term(lease)
                log.info(f"{what}.lease_lost", key=key)
        except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
            log.warning(f"{what}.failed", error=str(e) or type(e).__name__)
        await anyio.sleep(ttl / 2)


@contextlib.asynccontextmanager
async def keep(js: JetStreamContext, bucket: str, key: str, body: bytes, seq: int, ttl: float) -> AsyncIterator[Lease]:
    """Hold a key taken at ``seq`` while the body runs: renew every ttl/3, delete on exit.

    A renewal that cannot reach the server is retried at the next period (two are left before
    the TTL runs out); one that finds the key rewritten marks the lease ``lost`` and stops. The
    delete on exit is shielded, so a cancelled body (a drain) still releases the key.
    """
    lease = Lease(key, seq)
    error: Exception | None = None

    async def renew() -> None:
        while True:
            await anyio.sleep(ttl / 3)
            try:
                new = await put_if(js, bucket, key, body, lease.seq, ttl)
            except (nats.js.errors.APIError, *TRANSIENT):
                continue
            if new is None:
                lease.lost = True
                return
            lease.seq = new

    async with anyio.create_task_group() as tg:
        tg.start_soon(renew)
        try:
            yield lease
        except Exception as e:  # noqa: BLE001 - re-raised below, unwrapped by the task group
            error = e
        finally:
            tg.cancel_scope.cancel()
            if not lease.lost:
                with anyio.CancelScope(shield=True):
                    await delete_if(js, bucket, key, lease.seq)
    if error is not None:
        raise error
