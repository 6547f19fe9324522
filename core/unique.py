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

import nats.js.errors
from nats.js import JetStreamContext

from core.errors import JobError
from core.messages import Job
from core.names import UNIQUE_BUCKET, unique_key_subject

WRONG_LAST_SEQUENCE = 10071
DEFAULT_UNIQUE_FOR = 24 * 3600


class DuplicateJobError(JobError):
    """Raised when a job's unique key is held by another pending or running job."""

    title = "duplicate job"


def _subject(key: str) -> str:
    return unique_key_subject(hashlib.sha256(key.encode()).hexdigest())


async def hold(js: JetStreamContext, job: Job, unique_for: float = DEFAULT_UNIQUE_FOR) -> None:
    """Take the job's unique key.

    Raises:
        DuplicateJobError: another job holds the key.
    """
    subject = _subject(job.unique_key)
    expected = 0
    try:
        last = await js.get_msg(f"KV_{UNIQUE_BUCKET}", subject=subject, direct=True)
        h = last.headers or {}
        if not (h.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in h):
            holder = json.loads(last.data or b"{}").get("job_id", "?")
            if holder != job.id:
                raise DuplicateJobError(f"a job with unique key {job.unique_key!r} is pending or running (job {holder})")
            return  # a retried submit of the same job
        expected = last.seq
    except nats.js.errors.NotFoundError:
        pass
    body = json.dumps({"job_id": job.id, "key": job.unique_key}).encode()
    try:
        await js.publish(subject, body, headers={"Nats-Expected-Last-Subject-Sequence": str(expected), "Nats-TTL": f"{int(unique_for)}s"})
    except nats.js.errors.APIError as e:
        if e.err_code == WRONG_LAST_SEQUENCE:
            raise DuplicateJobError(f"a job with unique key {job.unique_key!r} was submitted concurrently") from e
        raise


async def release(js: JetStreamContext, job: Job) -> None:
    """Free the key (the job has ended)."""
    if job.unique_key:
        await js.publish(_subject(job.unique_key), b"", headers={"KV-Operation": "DEL"})
