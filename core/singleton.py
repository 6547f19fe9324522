"""Singleton jobs: at most one job per key running across the whole fleet.

A job with ``singleton: {"key": K}`` holds the lease ``single.K`` in the
``corral_limits`` bucket (core/leases.py: a KV key created only if absent, with
a TTL, renewed while the handler runs and deleted when it ends) for its whole
run. A bot that cannot take the lease does one of two things, chosen per job
by ``singleton.busy``:

* ``queue`` (the default): the job waits behind the running one. It is nak'd
  with a growing delay and recorded ``throttled``, like a job over its kind's
  concurrency cap; that delivery is not an attempt. Waiting jobs are offered
  again in no promised order.
* ``drop``: the job ends without running, recorded ``dropped`` (a terminal
  state, naming the job that held the key), and what follows its end runs as
  for a cancelled job (its unique key is released).

A bot that dies holding the lease stops renewing it, so the key frees itself
after the lease (30 s) and the next job, or the dead one's redelivery, takes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nats.js import JetStreamContext

from corral.core import leases
from corral.core.limits import BUCKET, DEFAULT_LEASE, Admitted

QUEUE = "queue"  #: wait behind the running job (nak with a delay; not an attempt)
DROP = "drop"  #: end without running, recorded as ``dropped``
MODES = (QUEUE, DROP)


def lease_key(key: str) -> str:
    """The KV key a running singleton job holds in ``corral_limits``."""
    return f"single.{key}"


@dataclass(frozen=True)
class Busy:
    """Another job holds the key; ``holder`` is its ``bot/job`` as recorded in the lease."""

    key: str
    holder: str


async def take(js: JetStreamContext, key: str, owner: str, lease: float = DEFAULT_LEASE) -> Admitted | Busy:
    """Take the key's lease for ``owner`` (``bot/job``), or say who holds it."""
    body = leases.holder_body(owner)
    k = lease_key(key)
    seq = await leases.take(js, BUCKET, k, body, lease)
    if seq is not None:
        return Admitted(js, k, seq, body, lease)
    return Busy(key, await holder(js, key))


async def holder(js: JetStreamContext, key: str) -> str:
    """``bot/job`` holding the key, or ``?`` if it cannot be read (or was just released)."""
    msg = await leases.read(js, BUCKET, lease_key(key))
    if msg is None or leases.is_gone(msg):
        return "?"
    try:
        return str(json.loads(msg.data or b"{}").get("owner", "?"))
    except ValueError:
        return "?"
