"""A 3-node JetStream cluster (cluster/n1..n3.conf) losing its jobs-stream leader under load.

The nodes run the checked-in configs; only their ports are replaced with free
ones on the command line (-p, -m, --cluster, --routes override the file), so
the test never collides with a cluster someone is running from cluster/.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from corral.core.history import walk
from corral.core.messages import make_job
from corral.core.names import EVENTS_STREAM, JOBS_STREAM, RESULTS_STREAM, RESULTS_SUBJECT, parse_result_subject
from corral.harness.server import CLUSTER_CONF, EmbeddedServer, free_port
from corral.core.submit import submit_many
from tests.conftest import FAST, eventually, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

NODES = ("n1", "n2", "n3")
JOBS = 300
#: Long enough that the kill lands while jobs are in flight on both bots, short enough to stay quick.
JOB_SECONDS = 0.05


def _healthy(server: EmbeddedServer) -> bool:
    """True once /healthz is ok: this node sees a JetStream meta leader."""
    try:
        with urllib.request.urlopen(f"{server.monitor_url}/healthz", timeout=1) as r:
            return json.load(r).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, EmbeddedServer]]:
    """Three running nodes by server_name, each healthy (a meta leader is elected)."""
    route_ports = [free_port() for _ in NODES]
    routes = ",".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
    servers = {
        name: EmbeddedServer(
            tmp_path / name, config=CLUSTER_CONF / f"{name}.conf",
            extra=["--cluster", f"nats://127.0.0.1:{port}", "--routes", routes],
        )
        for name, port in zip(NODES, route_ports, strict=True)
    }
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            wait_for(functools.partial(_healthy, server), timeout=30, interval=0.1, what=f"{server.monitor_url}/healthz ok")
        yield servers
    finally:
        for server in servers.values():
            server.kill()


async def provision_r3(nc) -> None:
    """streams/ with every stream at three replicas (consumers follow their stream) and FAST consumers."""
    from corral.streams import load_declarations
    from corral.streams.provision import provision

    decls = [
        d.with_config(**FAST) if d.kind == "consumer" else d.replicated(3)
        for d in load_declarations()
    ]
    await provision(nc, decls)


async def result_count(js) -> int:
    try:
        return (await js.stream_info(RESULTS_STREAM)).state.messages
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return -1  # mid-election: ask again


async def new_leader(js, old: str) -> str | None:
    try:
        leader = (await js.stream_info(JOBS_STREAM)).cluster.leader
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return None
    return leader if leader and leader != old else None


async def test_killing_the_jobs_stream_leader_loses_no_job_and_records_no_second_result(cluster, bots):
    """Given an R3 cluster, two bots and 300 jobs, when the CORRAL_JOBS leader is SIGKILLed mid-run,
    then every job gets exactly one result."""
    urls = ",".join(s.url for s in cluster.values())
    nc = await nats.connect(servers=urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=2)
    await provision_r3(nc)
    info = await js.stream_info(JOBS_STREAM)
    assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2

    a, b = bots(urls, "ca"), bots(urls, "cb")
    wait_for(lambda: a.ready() and b.ready(), timeout=30, what="both bots ready")
    jobs = [make_job("sleep", {"seconds": JOB_SECONDS}) for _ in range(JOBS)]
    summary = await submit_many(js, jobs)
    assert summary.accepted == JOBS and summary.ok

    # When: a quarter of the jobs are done, the node leading CORRAL_JOBS dies without warning.
    await eventually(lambda: _at_least(js, JOBS // 4), timeout=30, what=f"{JOBS // 4} results")
    leader = (await js.stream_info(JOBS_STREAM)).cluster.leader
    done_at_kill = await result_count(js)
    cluster[leader].kill()
    killed_at, killed_wall = time.monotonic(), time.time()
    poll = nc.jetstream(timeout=0.5)  # short, so the measured election time is not a client timeout
    elected = await eventually(lambda: new_leader(poll, leader), timeout=30, interval=0.05, what="a new CORRAL_JOBS leader")
    election_s = time.monotonic() - killed_at

    # Then: all 300 results, one per job, and nothing left in the work queue.
    await eventually(lambda: _all_done_while_alive(poll, a, b), timeout=90, interval=0.1, what=f"all {JOBS} results")
    stored = [m async for m in walk(js, RESULTS_STREAM, RESULTS_SUBJECT)]
    assert sorted(parse_result_subject(m.subject)[0] for m in stored) == sorted(j.id for j in jobs)
    assert (await js.stream_info(RESULTS_STREAM)).state.messages == JOBS
    await eventually(lambda: _jobs_left(poll, 0), timeout=20, what="an empty work queue")

    # Recovery as the results stream saw it (server timestamps), for docs/cluster.md.
    after = sorted(m.time.timestamp() for m in stored if m.time.timestamp() > killed_wall) or [killed_wall]
    events = [e async for e in walk(js, EVENTS_STREAM, "corral.events.job.*")]
    duplicates = sum(b'"duplicate"' in (e.data or b"") for e in events)
    print(
        f"\nkilled {leader} with {done_at_kill}/{JOBS} done; new stream leader {elected} seen after {election_s:.2f}s; "
        f"first result stored {after[0] - killed_wall:.2f}s after the kill, last {after[-1] - killed_wall:.2f}s after; "
        f"duplicate deliveries fenced: {duplicates}"
    )
    await nc.close()


async def _all_done_while_alive(js, *bots) -> bool:
    """All results stored; a bot that died meanwhile fails the test at once, with its log."""
    for bot in bots:
        assert bot.alive, f"bot {bot.name} died during failover:\n{bot.log()[-4000:]}"
    return await _at_least(js, JOBS)


async def _at_least(js, n: int) -> bool:
    return await result_count(js) >= n


async def _jobs_left(js, n: int) -> bool:
    try:
        return (await js.stream_info(JOBS_STREAM)).state.messages == n
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return False
