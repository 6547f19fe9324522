"""A bot's /metrics, /healthz and /readyz, read over HTTP from a real bot process."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from corral.core.messages import make_job
from corral.harness.server import free_port
from corral.core.submit import submit
from tests.conftest import eventually

pytestmark = pytest.mark.anyio


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


async def _async(fn):
    return fn()


async def test_metrics_count_outcomes_and_readiness_follows_the_connection(js, provisioned, bots):
    """Counters move with real jobs; /readyz turns 503 when the server goes away and 200 when it returns."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    bot = bots(provisioned.url, "m1", "--metrics-port", str(port))
    await eventually(lambda: _async(lambda: get(base + "/readyz")[0] == 200), what="the bot to be ready")
    assert get(base + "/healthz")[0] == 200
    await submit(js, make_job("sum", {"a": 1, "b": 2}))
    await submit(js, make_job("fail", {}, max_attempts=1))
    await eventually(lambda: _async(lambda: 'corral_bot_jobs_total{kind="fail",outcome="dead"} 1.0' in get(base + "/metrics")[1]),
                     what="the dead counter")
    text = get(base + "/metrics")[1]
    assert 'corral_bot_jobs_total{kind="sum",outcome="succeeded"} 1.0' in text
    assert 'corral_bot_handler_seconds_count{kind="sum"} 1.0' in text
    assert 'corral_bot_state{state="ready"}' in text or 'corral_bot_state{state="processing"}' in text
    provisioned.kill()
    _status, body = await eventually(lambda: _async(lambda: (lambda r: r if r[0] == 503 else None)(get(base + "/readyz"))),
                                    what="readiness to drop")
    assert "not connected" in body or "state error" in body
    assert get(base + "/healthz")[0] == 200  # alive: a restart would not bring the server back
    provisioned.start()
    await eventually(lambda: _async(lambda: get(base + "/readyz")[0] == 200), timeout=30, what="readiness to return")
    assert "corral_bot_reconnects_total 1.0" in get(base + "/metrics")[1]
    assert bot.proc.poll() is None
