"""Operator actions on bots and queues, each recorded on the events stream with who did it."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from corral.core.errors import CorralError, NotFoundError
from corral.core.messages import Event, EventType, encode
from corral.core.names import JOBS_STREAM, consumer_name, control_subject, ops_events_subject
from corral.core.settings import Settings


async def record(nc: NATS, action: str, actor: str, detail: str) -> None:
    """Append an operator action to the audit trail (``corral.events.ops.<action>``)."""
    js = nc.jetstream()
    await js.publish(ops_events_subject(action), encode(Event(type=EventType.OPERATOR, ts=time.time(), actor=actor, detail=detail)))


async def drain_bot(nc: NATS, bot: str, actor: str, timeout: float = 3.0) -> dict:
    """Ask a bot to drain (finish its jobs, deregister, exit).

    Raises:
        NotFoundError: no bot of that name is listening.
        CorralError: the bot did not answer in time.
    """
    try:
        msg = await nc.request(control_subject(bot), json.dumps({"action": "drain", "actor": actor}).encode(), timeout=timeout)
    except nats.errors.NoRespondersError as e:
        raise NotFoundError(f"bot {bot!r} did not answer: no bot of that name is running (`corral status` lists them)") from e
    except nats.errors.TimeoutError as e:
        raise CorralError(f"bot {bot!r} did not answer in {timeout:g}s: is it running?") from e
    await record(nc, "drain", actor, f"drain bot {bot}")
    return json.loads(msg.data)


async def pause_queue(nc: NATS, queue: str, actor: str, priority: str = "normal", until: dt.datetime | None = None) -> None:
    """Pause a queue's consumer (JetStream consumer pause): bots' fetches get nothing until resumed.

    Raises:
        NotFoundError: the queue has no consumer at that priority.
    """
    until = until or dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
    try:
        await nc.jetstream().pause_consumer(JOBS_STREAM, consumer_name(queue, priority), until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    except nats.js.errors.NotFoundError as e:
        raise _no_queue(queue, priority) from e
    await record(nc, "pause", actor, f"pause queue {queue}/{priority}")


async def resume_queue(nc: NATS, queue: str, actor: str, priority: str = "normal") -> None:
    """Resume a paused queue's consumer.

    Raises:
        NotFoundError: the queue has no consumer at that priority.
    """
    try:
        await nc.jetstream().resume_consumer(JOBS_STREAM, consumer_name(queue, priority))
    except nats.js.errors.NotFoundError as e:
        raise _no_queue(queue, priority) from e
    await record(nc, "resume", actor, f"resume queue {queue}/{priority}")


def _no_queue(queue: str, priority: str) -> NotFoundError:
    return NotFoundError(f"no queue {queue}/{priority}: its consumer {consumer_name(queue, priority)} does not exist "
                         "(`corral status` lists the consumers; streams/ declares them)")


def actor(settings: Settings | None = None) -> str:
    """Who an operator action is recorded as: user@host.

    The user is the NATS user the connection logs in as when ``settings`` name one (the
    secured profile): that name is the one the server checked a password for, where the
    login name of the shell (``$USER``, the fallback) is only what the machine says.
    """
    user = settings.user if settings is not None and settings.user else None
    if user is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"
