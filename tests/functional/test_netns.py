"""Three hosts on a real network (network namespaces), one partitioned from the other two and healed.

Each host runs one cluster node and one `corral fleet` supervisor with two bots,
all given the three nodes' addresses. The test process sits on the same bridge,
submits and judges from the raw streams. Skips without root or `ip netns`,
except under CI (the environment variable CI set), where it fails instead.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from corral.core.history import walk
from corral.core.messages import event_decoder, make_job, result_decoder
from corral.core.names import EVENTS_STREAM, JOBS_STREAM, RESULTS_STREAM, RESULTS_SUBJECT, parse_result_subject
from corral.core.submit import submit_many
from corral.harness import netns
from corral.harness.cluster import healthy
from corral.harness.netns import HOSTS, HostServer, Network
from tests.conftest import FAST, eventually, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.netns, pytest.mark.timeout(300)]

JOBS = 120
JOB_SECONDS = 0.3
CUT = 3  #: the host partitioned from the other two
#: A bot of the cut host may still start a job this long after the cut: the old consumer leader
#: on its side hands out what it has until it notices it lost its quorum (measured 0 to ~2 s).
CLAIM_GRACE = 12.0

# The deadlines below are the product's recovery bounds, not guesses (docs/cluster.md):
CLIENT_DEAD = 5 * 3 + 5  #: a client notices a dead link: ping every 5 s, 3 outstanding (core/connect.py)
ROUTE_DEAD = 5 * 2 + 5  #: a node drops a cut-off peer: ping_interval 5 s, ping_max 2 (cluster/n*.conf)
ELECTION = 9  #: the longest raft election timeout: a stream or consumer led from the cut node moves
BOT_TTL = 3  #: the fleets' --bot-ttl and --ttl: a cut-off bot's or supervisor's key lapses after it
ACK_WAIT = FAST["ack_wait"] / 1e9  #: what the cut host's bots held comes back to the majority after it
BACKOFF_MAX = 2  #: the fleets' --backoff-max: the longest wait before a slot restarts its bot
#: CI runs this beside the whole suite on two cores: every bound gets this much headroom.
LOAD = 2.0
#: The majority ends every job: it notices the dead node, elects, redelivers, and runs what is left.
FINISH = (CLIENT_DEAD + ELECTION + ACK_WAIT + JOBS * JOB_SECONDS / 8) * LOAD
#: The majority reads the cut host's row without its bots: their keys lapse, the route to it is dropped.
GONE = (max(BOT_TTL + 1, ROUTE_DEAD)) * LOAD
#: After the heal: the routes re-form and node 3 catches up, then every cut-off key is written again.
REJOIN = (ROUTE_DEAD + ELECTION + BOT_TTL + BACKOFF_MAX) * LOAD


class HostFleet:
    """`corral fleet` inside a host's namespace, in its own process group so teardown reaches its bots."""

    def __init__(self, net: Network, host: int, urls: str, home: Path) -> None:
        self.net, self.host, self.urls = net, host, urls
        self.log_dir = home / "bots"
        self.log_path = home / "fleet.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*net.exec_prefix(host), sys.executable, "-m", "corral.cli", "fleet", "--server", urls, "--host", f"h{host}",
             "--count", "2", "--bot-ttl", "3", "--ttl", "3", "--backoff-base", "0.2", "--backoff-max", "2",
             "--stop-timeout", "10", "--log-dir", str(self.log_dir), "--",
             "--concurrency", "2", "--publish-timeout", "2", "--backoff-base", "0.2", "--outbox", str(home / "outbox")],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def corral(self, *args: str, server: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a `corral` command on this host, as its operator would."""
        try:
            return subprocess.run([*self.net.exec_prefix(self.host), sys.executable, "-m", "corral.cli", *args,
                                   "--server", server or self.urls], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, -1, e.stdout or "", f"(no answer in {timeout}s)")

    def bot_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def close(self) -> None:
        with_group = lambda sig: os.killpg(self.proc.pid, sig)  # noqa: E731 - the group is ours alone
        try:
            with_group(signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        finally:
            try:
                with_group(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self._log.close()


def _unavailable_or_fail() -> Network:
    reason = netns.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are required under CI: {reason}")
        pytest.skip(reason)
    return Network()


@pytest.fixture
def hosts(tmp_path: Path):
    """The network, the three nodes (healthy) and a fleet factory; everything is removed afterwards."""
    net = _unavailable_or_fail()
    servers: dict[int, HostServer] = {}
    fleets: list[HostFleet] = []
    try:
        net.up()
        servers = {h: HostServer(net, h, tmp_path / f"h{h}") for h in HOSTS}
        for s in servers.values():
            s.start()
        for s in servers.values():
            wait_for(functools.partial(healthy, s), timeout=60, interval=0.1, what=f"{s.monitor_url}/healthz ok")
        urls = ",".join(s.url for s in servers.values())

        def fleet(host: int) -> HostFleet:
            fleets.append(HostFleet(net, host, urls, tmp_path / f"h{host}"))
            return fleets[-1]

        yield net, servers, fleet
    finally:
        for f in fleets:
            f.close()
        for s in servers.values():
            s.kill()
        net.close()


async def provision_r3(nc) -> None:
    from corral.streams import load_declarations
    from corral.streams.provision import provision

    await provision(nc, [d.with_config(**FAST) if d.kind == "consumer" else d.replicated(3) for d in load_declarations()])


async def fleet_rows(f: HostFleet, server: str | None = None) -> dict[str, dict]:
    done = f.corral("fleet-status", "--json", server=server)
    return {r["host"]: r for r in json.loads(done.stdout)} if done.returncode == 0 else {}


async def count(js, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except Exception:  # noqa: BLE001 - mid-election: ask again
        return -1


async def test_a_partitioned_host_stops_claiming_the_majority_finishes_and_healing_records_nothing_twice(hosts):
    """Given three hosts with a node and a fleet each, when host 3 is cut off mid-run and then healed,
    then the other two finish every job, host 3's bots claim nothing while cut, and no job has two results."""
    net, servers, fleet = hosts
    majority = [servers[h].url for h in HOSTS if h != CUT]
    nc = await nats.connect(servers=majority, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=2)
    await provision_r3(nc)
    fleets = {h: fleet(h) for h in HOSTS}
    logs = f"logs under {fleets[CUT].log_path.parent.parent}"
    await eventually(lambda: _all_live(fleets[1], 2), timeout=60, interval=0.5, what="two live bots per host")

    jobs = [make_job("sleep", {"seconds": JOB_SECONDS}) for _ in range(JOBS)]
    assert (await submit_many(js, jobs)).accepted == JOBS
    await eventually(lambda: _at_least(js, JOBS // 5), timeout=60, what=f"{JOBS // 5} results")

    # When: host 3's link goes down.
    consumer_leader = (await js.consumer_info(JOBS_STREAM, "work-default-normal")).cluster.leader
    net.partition(CUT)
    cut_at = time.time()
    # Then: the majority finishes everything, host 3's jobs included (after their ack deadline).
    await eventually(lambda: _ended(js, JOBS), timeout=FINISH, interval=0.2,
                     what=f"all {JOBS} jobs ended while host {CUT} is cut ({logs})")
    finished_s = time.time() - cut_at
    dead = await count(js, "CORRAL_DLQ")
    # A sleep job has no reason to die: a dead letter here is a job the partition pushed over
    # its attempts (deliveries interrupted while a stream had no leader counted as attempts).
    assert dead == 0, f"{dead} sleep jobs were dead-lettered during the partition (see the bots' job.dead lines)"
    gone = await eventually(lambda: _host_gone(fleets[1], CUT), timeout=GONE, interval=0.5, what=f"h{CUT} without live bots")
    majority_view = await eventually(lambda: _answered(fleets[1]), timeout=GONE, interval=0.5,
                                     what="`corral fleet-status` answering on a majority host")
    cut_view = fleets[CUT].corral("fleet-status", timeout=15)
    net.heal(CUT)
    healed_at = time.time()

    # When healed: host 3 rejoins, serves new work, and nothing is pending or recorded twice.
    wait_for(lambda: healthy(servers[CUT]), timeout=REJOIN, interval=0.2, what=f"node n{CUT} healthy again")
    await eventually(lambda: _all_live(fleets[1], 2), timeout=REJOIN, interval=0.5, what=f"h{CUT}'s bots live again ({logs})")
    live_again_s = time.time() - healed_at
    more = [make_job("sleep", {"seconds": 0.05}) for _ in range(30)]

    async def all_accepted() -> bool:  # a stream may still be electing a leader: resubmit (ids dedupe)
        return (await submit_many(js, more)).accepted == len(more)
    await eventually(all_accepted, timeout=REJOIN, interval=0.5, what="the healed cluster to accept new jobs")
    await eventually(lambda: _at_least(js, JOBS + len(more)), timeout=REJOIN, what="the jobs submitted after healing")
    results = [(parse_result_subject(m.subject)[0], m.data) async for m in walk(js, RESULTS_STREAM, RESULTS_SUBJECT)]
    assert sorted(job for job, _ in results) == sorted(j.id for j in jobs + more)
    await eventually(lambda: _drained(js), timeout=REJOIN, what="a work queue with nothing pending")

    late = await _cut_host_starts(js, results, cut_at, healed_at)
    fenced = fleets[CUT].bot_logs().count("late finisher fenced")
    print(f"\nconsumer leader at the cut: {consumer_leader}; majority finished {finished_s:.1f}s after the cut; "
          f"h{CUT} row on the majority once its keys expired: {gone}\nstarts by h{CUT} bots after the cut (s): {late}; "
          f"late results fenced on h{CUT}: {fenced}; healed after {healed_at - cut_at:.1f}s, "
          f"all bots live again {live_again_s:.1f}s after the heal")
    for where, done in {"majority (h1)": majority_view, f"cut host (h{CUT})": cut_view}.items():
        print(f"--- corral fleet-status from {where} (exit {done.returncode}):\n{done.stdout}{done.stderr[-600:]}")
    assert all(t < CLAIM_GRACE for t in late), f"h{CUT}'s bots kept claiming while cut off: starts at {late}"
    # The healed host's supervisor kept its host: it did not mistake its own old entry for a rival's.
    assert fleets[CUT].proc.poll() is None and "fleet.host_lost" not in fleets[CUT].log_path.read_text(errors="replace")
    await nc.close()


async def _all_live(f: HostFleet, n: int) -> bool:
    rows = await fleet_rows(f)
    return len(rows) == len(HOSTS) and all(len(r["live"]) == n and r["supervisor"] for r in rows.values())


async def _host_gone(f: HostFleet, host: int) -> dict | None:
    row = (await fleet_rows(f)).get(f"h{host}")
    return row if row is not None and not row["live"] else None


async def _answered(f: HostFleet) -> subprocess.CompletedProcess | None:
    """The operator's `corral fleet-status`, once it answers (a request routed to the cut node is lost)."""
    done = f.corral("fleet-status", timeout=15)
    return done if done.returncode == 0 else None


async def _cut_host_starts(js, results: list[tuple[str, bytes]], cut_at: float, healed_at: float) -> list[float]:
    """Seconds after the cut at which a cut-off bot started a job: from `started` events and from results."""
    starts = [e.ts for m in [m async for m in walk(js, EVENTS_STREAM, "corral.events.job.*")]
              if (e := event_decoder.decode(m.data or b"")).type == "started" and (e.bot or "").startswith(f"h{CUT}-")]
    starts += [r.started_at for _, data in results if (r := result_decoder.decode(data)).bot.startswith(f"h{CUT}-")]
    return sorted({round(t - cut_at, 2) for t in starts if cut_at < t < healed_at})


async def _ended(js, n: int) -> bool:
    return await count(js, RESULTS_STREAM) + max(0, await count(js, "CORRAL_DLQ")) >= n


async def _at_least(js, n: int) -> bool:
    return await count(js, RESULTS_STREAM) >= n


async def _drained(js) -> bool:
    """Nothing left to deliver and nothing delivered unacknowledged (whatever the jobs stream's retention)."""
    try:
        info = await js.consumer_info(JOBS_STREAM, "work-default-normal")
    except Exception:  # noqa: BLE001 - mid-election: ask again
        return False
    return info.num_ack_pending == 0 and info.num_pending == 0
