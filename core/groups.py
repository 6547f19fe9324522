"""Fan-out / fan-in: a group of jobs and a callback that runs once every member has finished.

``make_group(members, callback)`` gives each member the group's id, its size and
the callback. When a member ends (succeeded or dead), its bot writes
``$KV.corral_groups.<group>.<member id>`` with the outcome, then counts the
group's *distinct* member keys (one stream-info request with a subjects
filter). A redelivered member rewrites its own key, so it is never counted
twice. When the count reaches the size, the bot submits the callback as
``<group>-done`` with every member's outcome in ``args["members"]``. Two members
finishing at once may both submit it: the deterministic id makes that one job
(Nats-Msg-Id, then the result fence). A bot dying between writing its key and
submitting the callback repeats both on the redelivery (the handler is not
re-run). Keys are kept 7 days.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from nats.js import JetStreamContext

from core.connect import api
from core.messages import Job, new_id
from core.names import check_token

BUCKET = "corral_groups"


def make_group(members: list[Job], callback: Job, group: str | None = None) -> list[Job]:
    """Members ready to submit: each knows the group, its size and the callback."""
    group = check_token(group or f"group-{new_id()[:20]}", "group id")
    return [msgspec.structs.replace(m, group=group, group_size=len(members), on_complete=callback) for m in members]


async def member_done(js: JetStreamContext, job: Job, outcome: str, detail: Any) -> dict[str, Any] | None:
    """Record a member's outcome; returns every member's outcome once all have finished, else None."""
    subject = f"$KV.{BUCKET}.{job.group}.{job.id}"
    await js.publish(subject, json.dumps({"outcome": outcome, "detail": detail, "ts": time.time()}, default=str).encode())
    # Raw API: nats-py's StreamState drops num_subjects.
    info = await api(js._nc, f"STREAM.INFO.KV_{BUCKET}", {"subjects_filter": f"$KV.{BUCKET}.{job.group}.*"})
    if info["state"].get("num_subjects", 0) < job.group_size:  # distinct members, not increments
        return None
    members: dict[str, Any] = {}
    seq = 1
    while True:
        try:
            msg = await js.get_msg(f"KV_{BUCKET}", seq=seq, subject=f"$KV.{BUCKET}.{job.group}.*", next=True, direct=True)
        except Exception:  # noqa: BLE001 - NotFound ends the walk
            break
        members[msg.subject.rsplit(".", 1)[-1]] = json.loads(msg.data or b"{}")
        seq = msg.seq + 1
    return members
