"""Cancelling jobs: a request in the ``corral_cancel`` bucket that every bot follows.

`corral cancel ID` writes ``$KV.corral_cancel.<id>``. Every bot follows the
bucket (within half a second): a pending job is terminated when it is next
delivered, without running; a running async handler is cancelled (anyio
cancellation, which the handler can observe with ``try/finally``) and the job
ends as ``cancelled``. A sync handler runs in a thread that cannot be
interrupted: the job still ends as cancelled, and the thread is abandoned to
finish in the background (docs/features.md). Requests expire after a day.
"""

from __future__ import annotations

import json
import time

from nats.aio.client import Client as NATS

from corral.core.control import record
from corral.core.names import cancel_key_subject, check_token


async def request_cancel(nc: NATS, job_id: str, actor: str) -> None:
    check_token(job_id, "job id")
    body = json.dumps({"by": actor, "ts": time.time()}).encode()
    await nc.jetstream().publish(cancel_key_subject(job_id), body)
    await record(nc, "cancel", actor, f"cancel job {job_id}")
