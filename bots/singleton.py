"""The bot's side of singleton jobs (core/singleton.py): take the key before the kind's limits.

The singleton lease is taken first and given back if the kind's limits then
throttle the job, so a job waiting for a concurrency slot never blocks its key.
While the handler runs both leases are renewed; either one lapsing is reported
as a lost slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from corral.core import leases, singleton
from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError
from corral.core.limits import BUCKET, FREE, Admitted, Throttled, throttle_delay
from corral.core.messages import Job


async def take(js: JetStreamContext, job: Job, owner: str, throttles: int) -> Admitted | singleton.Busy | Throttled:
    """The job's singleton lease (FREE without a key); Busy for a ``drop`` job; Throttled to wait."""
    if job.singleton is None:
        return FREE
    key = job.singleton.key
    try:
        got = await singleton.take(js, key, owner)
    except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
        why = str(e) or type(e).__name__
        if isinstance(e, nats.errors.NoRespondersError):
            why = "the corral_limits bucket is missing: run `corral provision`"
        return Throttled(f"singleton key {key} unreadable ({why})", throttle_delay(throttles))
    if isinstance(got, singleton.Busy) and job.singleton.busy != singleton.DROP:
        return Throttled(f"singleton key {key} is held by {got.holder}", throttle_delay(throttles))
    return got


async def give_back(js: JetStreamContext, admitted: Admitted) -> None:
    """Release a lease taken for a job that will not run now."""
    if admitted.slot is not None:
        with anyio.CancelScope(shield=True):
            await leases.delete_if(js, BUCKET, admitted.slot, admitted.seq)


class _Leases:
    def __init__(self, held: list[leases.Lease]) -> None:
        self.held = held

    @property
    def lost(self) -> bool:
        return any(lease.lost for lease in self.held)


@dataclass(frozen=True)
class Both:
    """A singleton lease and the kind's concurrency slot, held together for the run."""

    key: Admitted
    slot: Admitted

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[_Leases]:
        async with self.key.held() as a, self.slot.held() as b:
            yield _Leases([lease for lease in (a, b) if lease is not None])
