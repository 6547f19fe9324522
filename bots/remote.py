"""What operators ask of a running bot: remote control requests and job cancellations.

* **Control** (``corral.control.bot.<name>``, core NATS request/reply):
  ``{"action": "drain"}`` begins a graceful stop, ``{"action": "ping"}``
  answers with the bot's state and incarnation.
* **Cancellation**: every bot follows the cancel bucket with incremental direct
  gets from the last sequence it saw, which survives reconnects without a
  watcher to re-create, and cancels the named jobs if they run here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from corral.core.connect import TRANSIENT
from corral.core.errors import CorralError
from corral.core.history import seq_of, subject_of, walk
from corral.core.log import Logger
from corral.core.names import CANCEL_BUCKET, control_subject, kv_stream, kv_subject


async def answer_control(nc: Client, bot: str, incarnation: str, log: Logger,
                         stop: Callable[[], None], state: Callable[[], str]) -> None:
    """Answer control requests for ``bot`` until cancelled."""
    sub = await nc.subscribe(control_subject(bot))
    try:
        async for msg in sub.messages:
            try:
                request = json.loads(msg.data or b"{}")
                action = request.get("action")
            except (ValueError, AttributeError):
                request, action = {}, None
            if action == "drain":
                log.info("bot.drain_requested", by=request.get("actor", "?"))
                stop()
                reply = {"ok": True, "state": state()}
            elif action == "ping":
                reply = {"ok": True, "state": state(), "incarnation": incarnation}
            else:
                reply = {"ok": False, "error": f"unknown action {action!r}; use drain or ping"}
            if msg.reply:
                await nc.publish(msg.reply, json.dumps(reply).encode())
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()


async def watch_cancellations(js: JetStreamContext, cancel: Callable[[str], bool], log: Logger, interval: float = 0.5) -> None:
    """Follow the cancel bucket and ``cancel(job_id)`` each request; ``cancel`` says whether it ran here."""
    next_seq = 1
    while True:
        try:
            async for msg in walk(js, kv_stream(CANCEL_BUCKET), kv_subject(CANCEL_BUCKET, ">"), start_seq=next_seq):
                next_seq = seq_of(msg) + 1
                if msg.data:
                    job_id = subject_of(msg).rsplit(".", 1)[-1]
                    if cancel(job_id):
                        log.info("job.cancel_requested", job=job_id)
        except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
            log.debug("cancel_watch.failed", error=str(e) or type(e).__name__)
        await anyio.sleep(interval)
