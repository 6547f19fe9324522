"""deploy/k8s/keda-scaledobject.yaml against real servers, read the way KEDA's nats-jetstream scaler reads them.

The scaler asks the monitoring port for ``/jsz?acc=<account>&consumers=true&config=true``,
looks for an account whose id or name is the trigger's ``account``, then for the stream and
consumer, and scales on ``num_pending + num_ack_pending``. The account differs by profile
(the manifest's comment names both), so each profile is checked with the name the manifest
gives for it, and the name the old comment gave (``JOBS``) is shown to find nothing.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from corral.core.messages import make_job
from corral.core.submit import submit_many
from corral.harness.server import EmbeddedServer
from tests.functional.test_security import login, secure  # noqa: F401  (the secured-profile fixture)

pytestmark = pytest.mark.anyio

MANIFEST = (Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "keda-scaledobject.yaml").read_text()


def triggers() -> list[dict[str, str]]:
    """Each trigger's account, stream and consumer, in file order (PyYAML is not a dependency)."""
    found = re.findall(r'account: "([^"]+)".*\n\s+stream: (\S+)\n\s+consumer: (\S+)', MANIFEST)
    return [{"account": a, "stream": s, "consumer": c} for a, s, c in found]


def secure_account() -> str:
    """The account the manifest's comment gives for nats-secure.conf."""
    found = re.search(r'#\s+nats-secure\.conf\s+"([^"]+)"', MANIFEST)
    assert found, "the manifest's comment names no account for nats-secure.conf"
    return found.group(1)


def keda_lag(server: EmbeddedServer, account: str, stream: str, consumer: str) -> int | None:
    """KEDA's number for one trigger, or None when the scaler would find no such consumer."""
    query = urllib.parse.urlencode({"acc": account, "consumers": "true", "config": "true"})
    with urllib.request.urlopen(f"{server.monitor_url}/jsz?{query}", timeout=5) as reply:
        body = json.load(reply)
    for acc in body.get("account_details") or []:
        if account not in (acc.get("id"), acc.get("name")):
            continue
        streams = [st for st in acc.get("stream_detail") or [] if st["name"] == stream]
        for st in streams:
            for co in st.get("consumer_detail") or []:
                if co["name"] == consumer:
                    return co["num_pending"] + co["num_ack_pending"]
    return None


async def test_the_manifests_account_finds_every_jobs_consumer_on_the_default_profile(js, provisioned):
    """Given nats.conf and 3 queued jobs, when KEDA's query uses the manifest's account, then it finds every consumer and a lag of 3."""
    await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(3)])
    lags = {t["consumer"]: keda_lag(provisioned, t["account"], t["stream"], t["consumer"]) for t in triggers()}
    assert len(lags) == 3 and None not in lags.values(), lags
    assert lags["work-default-normal"] == 3, lags
    assert keda_lag(provisioned, "JOBS", "CORRAL_JOBS", "work-default-normal") is None


async def test_the_secure_profiles_account_is_the_one_the_manifest_documents(secure):  # noqa: F811
    """Given nats-secure.conf and 2 queued jobs, when KEDA's query uses the documented account,
    then it sees a lag of 2, and JOBS or $G see nothing."""
    admin = await login(secure.url, "admin")
    try:
        await submit_many(admin.nc.jetstream(), [make_job("sum", {"a": i, "b": 1}) for i in range(2)])
    finally:
        await admin.nc.close()
    account = secure_account()
    assert account == "CORRAL"
    for t in triggers():
        assert keda_lag(secure, account, t["stream"], t["consumer"]) is not None, t
    assert keda_lag(secure, account, "CORRAL_JOBS", "work-default-normal") == 2
    for wrong in ("JOBS", "$G"):
        assert keda_lag(secure, wrong, "CORRAL_JOBS", "work-default-normal") is None, wrong
