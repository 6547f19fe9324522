"""The secured profile and the operator tools: log subjects per bot, and who an operator action is recorded as.

Same server and logins as tests/functional/test_security.py (nats-secure.conf,
per-user passwords); a refused publish is silent for core NATS, so each refusal
is asserted as the server's ``permissions violation`` through ``error_cb``, and
as nothing stored.
"""

from __future__ import annotations

import os
import socket
import subprocess

import nats.js.errors
import pytest

from corral.core.dlq import move_to_dlq
from corral.core.history import walk
from corral.core.messages import encode, event_decoder, make_job
from corral.core.names import EVENTS_STREAM, LOGS_STREAM, job_subject, log_subject, ops_events_subject
from corral.core.spawn import corral_argv
from corral.harness.secure import login_env
from tests.conftest import eventually
from tests.functional import test_security
from tests.functional.test_security import PASSWORDS

pytestmark = pytest.mark.anyio

# test_security's server and logins, as fixtures of this module too
secure, admin, bot1 = test_security.secure, test_security.admin, test_security.bot1

HOST = "host-a"
LINE = b'{"level": "info", "logger": "bot", "event": "bot.ready"}'


async def stored_line(js, subject: str):
    """The last log line stored on ``subject``, or None."""
    try:
        return await js.get_msg(LOGS_STREAM, subject=subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None


async def test_bot_credentials_may_publish_their_own_log_lines(admin, bot1):
    """Given bot-1's login, when it publishes a line on its own corral.logs.<host>.bot-1, then CORRAL_LOGS stores it."""
    subject = log_subject(HOST, "bot-1")
    await bot1.nc.publish(subject, LINE)
    await bot1.nc.flush()

    async def stored():
        return await stored_line(admin.js, subject)

    msg = await eventually(stored, timeout=10, what=f"bot-1's line on {subject}")
    assert msg.data == LINE
    assert bot1.violations() == []


async def test_bot_credentials_cannot_publish_another_bots_log_lines(admin, bot1):
    """Given bot-1's login, when it publishes on bot-2's log subject, then the server reports a permissions
    violation and nothing is stored there."""
    forged = log_subject(HOST, "bot-2")
    await bot1.nc.publish(forged, LINE)
    await bot1.nc.flush()
    await bot1.refused(forged)
    own = log_subject(HOST, "bot-1")  # a line after the forged one: once it is stored, the forged one had its turn
    await bot1.nc.publish(own, LINE)
    await bot1.nc.flush()
    await eventually(lambda: stored_line(admin.js, own), timeout=10, what="bot-1's own line after the forged one")
    assert await stored_line(admin.js, forged) is None


async def test_a_bulk_replay_in_the_secured_profile_is_audited_as_the_nats_user(secure, admin):
    """Given a dead letter and the operator logged in as NATS user admin, when `corral dlq replay --kind --yes` runs,
    then the bulk audit event names admin@<host>, not the shell's login name."""
    job = make_job("resize", {"n": 1})
    await move_to_dlq(admin.js, data=encode(job), queue="default", job_id=job.id, reason="boom", attempts=3,
                      source_subject=job_subject("default"), source_seq=1)
    env = login_env({**os.environ, "USER": "somebody-else", "LOGNAME": "somebody-else"}, "admin", PASSWORDS["admin"])
    done = subprocess.run(corral_argv("dlq", "replay", "--kind", "resize", "--yes", "--server", secure.url),  # noqa: ASYNC221 - the CLI is the subject
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    audits = [event_decoder.decode(m.data or b"") async for m in walk(admin.js, EVENTS_STREAM, ops_events_subject("bulk"))]
    assert [(a.actor, a.state) for a in audits] == [(f"admin@{socket.gethostname()}", "replay")]
