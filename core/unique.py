"""Unique jobs: a key held in the ``corral_unique`` bucket while its job is pending or running.

Submitting a job with ``unique_key`` first creates ``$KV.corral_unique.<sha256(key)>``
(compare-and-set on "absent", with a TTL lease); a second submit with the same
key finds it held and is refused, naming the job that holds it. The bot that
ends the job (succeeded, dead, expired or cancelled) deletes the key. The TTL
(``unique_for``, default 24 h) bounds how long a lost key can block: a bot
that dies holding a job does not release it, but the job's redelivery ends it
and releases then.
"""

from __future__ import annotations

import hashlib
import json

from nats.js import JetStreamContext

from corral.core import leases
from corral.core.errors import JobError
from corral.core.messages import Job
from corral.core.names import UNIQUE_BUCKET, unique_key_subject

DEFAULT_UNIQUE_FOR = 24 * 3600


class DuplicateJobError(JobError):
    """Raised when a job's unique key is held by another pending or running job."""

    title = "duplicate job"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def hold(js: JetStreamContext, job: Job, unique_for: float = DEFAULT_UNIQUE_FOR) -> None:
    """Take the job's unique key (compare-and-set on "absent", with a TTL: core/leases.py).

    Raises:
        DuplicateJobError: another job holds the key.
    """
    if not job.unique_key:
        return  # nothing to hold, as release() has nothing to free
    key = _digest(job.unique_key)
    last = await leases.read(js, UNIQUE_BUCKET, key)
    if last is not None and not leases.is_gone(last):
        holder = json.loads(last.data or b"{}").get("job_id", "?")
        if holder != job.id:
            raise DuplicateJobError(f"a job with unique key {job.unique_key!r} is pending or running (job {holder})")
        return  # a retried submit of the same job
    body = json.dumps({"job_id": job.id, "key": job.unique_key}).encode()
    if await leases.put_if(js, UNIQUE_BUCKET, key, body, leases.revision(last), unique_for) is None:
        raise DuplicateJobError(f"a job with unique key {job.unique_key!r} was submitted concurrently")


async def release(js: JetStreamContext, job: Job) -> None:
    """Free the key (the job has ended)."""
    if job.unique_key:
        await js.publish(unique_key_subject(_digest(job.unique_key)), b"", headers={"KV-Operation": "DEL"})
