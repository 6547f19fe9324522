"""Moving a work-queue CORRAL_JOBS (the previous version's) to limits retention, losing no job.

The server refuses to change a stream's retention in place (err_code 10052, "stream
configuration update can not change retention policy to/from workqueue"), so the stream
is rebuilt. Every step leaves the server in a state the next run recognises, so a
migration that crashed or was interrupted is finished by running it again:

1. **Seal.** ``sealed: true`` on the old stream: no submit, no sourced firing, no ack can
   change it any more. Bots must be stopped first (live ones are refused unless forced).
2. **Copy** every message (subject, headers, data) into the holding stream
   :data:`HOLDING` on the server, each under ``Nats-Msg-Id: mig-<old seq>`` so a resumed
   copy adds nothing twice. Then a ``copied`` marker with the count and where the new
   stream's schedules source must start.
3. **Rebuild:** delete the old stream; create CORRAL_JOBS and its consumers from streams/.
4. **Republish** from the holding stream in order, recording progress every
   :data:`BATCH` messages; a job's own ``Nats-Msg-Id`` goes with it, so a batch repeated
   after a crash is deduplicated by the new stream.
5. **Verify** the count, then delete the holding stream.

Attempt numbers survive: bots count attempts from the events trail, not from the
server's delivery count, which the new consumers start again at 1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import anyio
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import RawStreamMsg

from corral.core.errors import CorralError, MissingResourceError
from corral.core.history import walk
from corral.core.jsapi import api
from corral.core.messages import decode_job
from corral.core.names import BATCH_HEADERS, JOBS_STREAM, SCHEDULES_STREAM, stream_op
from corral.core.schedules import firing_id
from corral.core.status import live_bots
from corral.streams import Declaration

HOLDING = "CORRAL_JOBS_MIGRATION"
ENVELOPES = "corral.migration.jobs"
MARKER = "corral.migration.copied"
PROGRESS = "corral.migration.republished"
BATCH = 100
#: Headers the server sets on store; republishing them would be refused or meaningless.
_SERVER_HEADERS = {"Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Stream", "Nats-Last-Sequence",
                   "Nats-Num-Pending", "Nats-Stream-Source"}
REFUSAL = ("CORRAL_JOBS is a work-queue stream from a previous corral; the server cannot change retention in place. "
           "Stop every bot, then run `corral provision --migrate` (docs/resources.md, 'Migrating the jobs stream')")

Progress = Callable[[str], None]


async def info(nc: NATS, stream: str) -> dict[str, Any] | None:
    try:
        return await api(nc, stream_op("INFO", stream))
    except MissingResourceError:
        return None


def needs_migration(jobs: dict[str, Any] | None, holding: dict[str, Any] | None) -> bool:
    """A work-queue jobs stream, or a migration left half-way."""
    return holding is not None or (jobs is not None and jobs["config"].get("retention") == "workqueue")


async def migrate(nc: NATS, decls: list[Declaration], *, force: bool = False, say: Progress = print) -> int:
    """Migrate (or finish migrating) CORRAL_JOBS; returns the number of jobs carried over.

    ``decls`` are the declarations to apply (the jobs stream and its consumers among them).

    Raises:
        CorralError: bots are live and ``force`` is false, or the copy does not add up.
    """
    jobs, holding = await info(nc, JOBS_STREAM), await info(nc, HOLDING)
    if not needs_migration(jobs, holding):
        say("CORRAL_JOBS already has limits retention: nothing to migrate")
        return 0
    js = nc.jetstream()
    bots = await live_bots(js)
    if bots and not force:
        raise CorralError(f"{len(bots)} bot(s) are live ({', '.join(sorted(b.name for b in bots))}): stop them first, "
                          "or pass --force if they are gone for good")
    marker = await _marker(nc) if holding else None
    if marker is None:
        if jobs is None:
            raise CorralError(f"the holding stream {HOLDING} has no complete copy and CORRAL_JOBS is gone: "
                              "restore from a backup")
        marker = await _seal_and_copy(nc, jobs, holding is not None, say)
    if jobs is not None and jobs["config"].get("retention") == "workqueue":
        await api(nc, stream_op("DELETE", JOBS_STREAM))
        say("deleted the old work-queue CORRAL_JOBS")
    await _rebuild(nc, decls, marker["source_start"], say)
    await _republish(nc, marker["count"], say)
    await api(nc, stream_op("DELETE", HOLDING))
    say(f"migrated {marker['count']} job(s); deleted {HOLDING}")
    return int(marker["count"])


async def _marker(nc: NATS) -> dict[str, Any] | None:
    msg = await _last(nc, HOLDING, MARKER)
    return json.loads(msg.data or b"{}") if msg is not None else None


async def _last(nc: NATS, stream: str, subject: str) -> RawStreamMsg | None:
    try:
        return await nc.jetstream().get_msg(stream, subject=subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None


async def _seal_and_copy(nc: NATS, jobs: dict[str, Any], resumed: bool, say: Progress) -> dict[str, Any]:
    js = nc.jetstream()
    if not resumed:
        await api(nc, stream_op("CREATE", HOLDING), {
            "name": HOLDING, "subjects": ["corral.migration.>"], "retention": "limits", "storage": "file",
            "num_replicas": jobs["config"].get("num_replicas", 1), "discard": "new", "max_msgs": -1, "max_bytes": -1,
            "duplicate_window": 24 * 3600 * 1_000_000_000, "allow_direct": True,
        })
    fired = await _sourced_up_to(nc, jobs)
    if not jobs["config"].get("sealed"):
        await api(nc, stream_op("UPDATE", JOBS_STREAM), {**jobs["config"], "sealed": True})
        say("sealed CORRAL_JOBS: it takes no submit, firing or ack until the migration ends")
    last = await _last(nc, HOLDING, ENVELOPES)
    start = json.loads(last.data or b"{}")["seq"] + 1 if last is not None else 1
    count = 0 if last is None else (await api(nc, stream_op("INFO", HOLDING), {"subjects_filter": ENVELOPES}))["state"]["messages"]
    async for msg in walk(js, JOBS_STREAM, ">", start_seq=start):
        headers = {k: v for k, v in (msg.headers or {}).items() if k not in _SERVER_HEADERS and not k.startswith("Nats-Expected-")}
        fired = max(fired, _source_seq(msg.headers or {}))
        envelope = {"seq": msg.seq, "subject": msg.subject, "headers": headers,
                    "data": base64.b64encode(msg.data or b"").decode()}
        await js.publish(ENVELOPES, json.dumps(envelope).encode(), headers={"Nats-Msg-Id": f"mig-{msg.seq}"}, stream=HOLDING)
        count += 1
        if count % 500 == 0:
            say(f"copied {count} job(s) into {HOLDING}")
    stored = (await api(nc, stream_op("INFO", JOBS_STREAM)))["state"]["messages"]
    if count != stored:
        raise CorralError(f"copied {count} job(s) but CORRAL_JOBS holds {stored}: nothing was deleted; run it again")
    marker = {"count": count, "source_start": fired + 1}
    await js.publish(MARKER, json.dumps(marker).encode(), stream=HOLDING)
    say(f"copied {count} job(s) into {HOLDING}")
    return marker


async def _sourced_up_to(nc: NATS, jobs: dict[str, Any]) -> int:
    """A schedules-stream sequence every firing up to which is already in the old jobs stream.

    Read before sealing: the schedules stream's last sequence, once the old stream's source
    lag is 0. Firings sourced after it are still in the sealed stream (no bot acks during
    the migration) and raise the start through their ``Nats-Stream-Source`` headers.
    """
    schedules = await info(nc, SCHEDULES_STREAM)
    if schedules is None or not jobs["config"].get("sources"):
        return 0
    last = int(schedules["state"]["last_seq"])
    with anyio.move_on_after(10):
        while True:
            now = await info(nc, JOBS_STREAM) or {}
            if all(int(s.get("lag") or 0) == 0 for s in now.get("sources") or []):
                return last
            await anyio.sleep(0.1)
    return 0  # never caught up: only the headers of what it holds say how far it got


def _source_seq(headers: dict[str, str]) -> int:
    """The origin sequence in ``Nats-Stream-Source`` (``CORRAL_SCHEDULES <seq> ...``), 0 if none."""
    parts = headers.get("Nats-Stream-Source", "").split()
    if len(parts) >= 2 and parts[0].startswith(SCHEDULES_STREAM) and parts[1].isdigit():
        return int(parts[1])
    return 0


async def _rebuild(nc: NATS, decls: list[Declaration], source_start: int, say: Progress) -> None:
    from corral.streams.provision import apply

    for decl in [d for d in decls if d.stream == JOBS_STREAM]:
        if decl.kind == "stream" and decl.body.get("sources"):
            # Firings the old stream already took are in the copy; source only later ones.
            body = {**decl.body, "sources": [{**s, "opt_start_seq": source_start} if s.get("name") == SCHEDULES_STREAM else s
                                             for s in decl.body["sources"]]}
            decl = Declaration(decl.kind, decl.name, body, decl.path)
        report = await apply(nc, decl)
        say(report.line())


def _keep_firing_id(headers: dict[str, str], envelope: dict[str, Any]) -> None:
    """A periodic firing's job id includes its jobs-stream sequence, which republishing changes:
    pin the old id in ``Corral-Job-Id`` so a firing that already ran is still fenced."""
    if "Nats-Scheduler" not in headers or "Corral-Job-Id" in headers:
        return
    try:
        job = decode_job(base64.b64decode(envelope["data"]))
    except CorralError:
        return  # undecodable: the bots dead-letter it, under whatever id
    fid = firing_id(job.id, headers, envelope["seq"])
    if fid != job.id:
        headers["Corral-Job-Id"] = fid


async def _republish(nc: NATS, count: int, say: Progress) -> None:
    js = nc.jetstream()
    done = await _last(nc, HOLDING, PROGRESS)
    start = json.loads(done.data or b"{}")["seq"] + 1 if done is not None else 1
    seen: set[str] = set()
    n = 0
    async for msg in walk(js, HOLDING, ENVELOPES):
        envelope = json.loads(msg.data or b"{}")
        headers = dict(envelope["headers"] or {})
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id in seen:
            headers.pop("Nats-Msg-Id")  # two stored jobs shared an id (past the dedupe window): keep both
        seen.add(msg_id or "")
        _keep_firing_id(headers, envelope)
        # The server refuses schedule headers on a stream without message schedules; a firing's
        # job id is pinned above, which is all the bots read them for.
        # Batch headers would make the republish a batch member of its own (jobs submitted in
        # atomic batches keep them, core/submit.py).
        headers = {k: v for k, v in headers.items() if not k.startswith("Nats-Schedule") and k not in BATCH_HEADERS}
        if envelope["seq"] >= start:
            await js.publish(envelope["subject"], base64.b64decode(envelope["data"]), headers=headers or None, stream=JOBS_STREAM)
        n += 1
        if n % BATCH == 0 or n == count:
            await js.publish(PROGRESS, json.dumps({"seq": envelope["seq"]}).encode(), stream=HOLDING)
            say(f"republished {n} of {count} job(s)")
    stored = (await api(nc, stream_op("INFO", JOBS_STREAM)))["state"]["messages"]
    if stored < count:
        raise CorralError(f"republished into CORRAL_JOBS but it holds {stored} of {count}: {HOLDING} is kept; run it again")
