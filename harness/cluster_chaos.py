"""The chaos suite on the 3-node cluster: R3 streams losing leaders, a node's clients cut off.

`corral chaos --cluster` starts three nodes from cluster/n1..n3.conf (each in
its own folder, free ports), provisions every stream R3, starts real bot
processes and submits a mix of ``sleep``, ``echo`` and ``sum`` jobs that must
succeed and ``fail`` jobs that must end dead-lettered. During that one run it
injects, one after another:

* ``kill_jobs_leader``: SIGKILL the node leading ``CORRAL_JOBS``, then restart
  it on its store once a new leader is elected;
* ``kill_results_leader``: the same for ``CORRAL_RESULTS``;
* ``cut_node``: every bot reaches each node through a TCP proxy owned by the
  suite; cut all client links into the node most bots are on, for longer than
  the ack deadline. The node itself stays in the cluster (the partition of a
  whole host, peers included, is tests/functional/test_netns.py's job);
* ``kill_bot``: SIGKILL a bot holding jobs and start a replacement;
* ``freeze_bot``: SIGSTOP a bot holding jobs past the ack deadline, then SIGCONT.

Faults are spread over the run (fault k of n once k/(n+1) of the first batch has ended).
Fault k of n strikes once k/(n+1) of the first batch has ended, so the
faults are spread over the run. A fault's recovery time runs from the fault until every job in flight when it
struck has an outcome (for ``kill_bot`` and ``freeze_bot``: the victim's jobs).
A node kill also records when its stream had a new leader and when the
restarted node was healthy again. The verdict is the single-node suite's,
read from the raw streams: one result or one dead letter per submitted job,
nothing pending.
"""

from __future__ import annotations

import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import nats

from corral.core.backlog import unfinished
from corral.core.log import Logger
from corral.core.messages import Job, make_job
from corral.core.names import JOBS_STREAM, RESULTS_STREAM
from corral.core.status import live_bots
from corral.core.submit import submit_many
from corral.harness.chaos import (
    BOT_ARGS, NS, ChaosConfig, ChaosReport, ChaosRun, ChaosStalledError, FaultRecord, Proxy, _quiet, _until,
)
from corral.harness.cluster import NODES, LocalCluster, stream_leader
from corral.harness.procs import BotProcess

CLUSTER_FAULTS = ("kill_jobs_leader", "kill_results_leader", "cut_node", "kill_bot", "freeze_bot")
LEADER_OF = {"kill_jobs_leader": JOBS_STREAM, "kill_results_leader": RESULTS_STREAM}


@dataclass
class ClusterFaultRecord(FaultRecord):
    leader_s: float | None = None  #: node kills: fault to a new leader of the stream
    rejoined_s: float | None = None  #: node kills: fault to the restarted node healthy again
    held: int = 0  #: jobs in flight that the recovery time waited for


@dataclass
class ClusterChaosConfig(ChaosConfig):
    jobs: int = 400
    failing: int = 20
    bots: int = 4
    concurrency: int = 4
    faults: tuple[str, ...] = CLUSTER_FAULTS
    timeout: float = 900.0


class ClusterChaosRun(ChaosRun):
    """:class:`ChaosRun` with three nodes, R3 streams, proxied bots and cluster faults."""

    config: ClusterChaosConfig
    jobs: list[Job]  #: every job submitted in the run, the first batch and each top-up
    _topping: list[Job]  #: a top-up counted in ``jobs`` whose send has not yet succeeded

    def _start_bot(self, url: str, name: str | None = None) -> BotProcess:
        self._serial += 1
        bot = BotProcess(url, name or f"cchaos-{self._serial}", self.home / "bots", "--concurrency",
                         str(self.config.concurrency), *BOT_ARGS)
        self.bots.append(bot)
        return bot

    async def run(self) -> ChaosReport:
        t0 = time.monotonic()
        self.cluster = LocalCluster(self.home)
        self.proxies = {name: Proxy(node.port) for name, node in self.cluster.nodes.items()}
        nc = None
        try:
            await anyio.to_thread.run_sync(self.cluster.start)
            for proxy in self.proxies.values():
                await proxy.start()
            nc = await nats.connect(servers=self.cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            js = nc.jetstream(timeout=2)
            self.poll = nc.jetstream(timeout=0.5)  # short, so a measured election is not a client timeout
            await _provision_r3(nc, self.config.ack_wait)
            self.bot_url = ",".join(f"nats://127.0.0.1:{p.port}" for p in self.proxies.values())
            for _ in range(self.config.bots):
                self._start_bot(self.bot_url)
            await _until(lambda: _ready(self.bots), 60, "bots ready")
            self.jobs = jobs = self._jobs()
            self._topping = []
            self.report.submitted = await _submit_all(js, jobs)
            self.log.info("chaos.submitted", jobs=self.report.submitted)
            for k, fault in enumerate(self.config.faults):
                # Spread over the run: fault k strikes once k/(n+1) of the first batch has ended.
                mark = len(jobs) * (k + 1) // (len(self.config.faults) + 1)
                await _until(lambda mark=mark: _quiet(lambda: self._ended(js, mark)), self.config.timeout, f"{mark} jobs ended")
                await self._before_fault(js)  # top-ups go into self.jobs, the same list as jobs
                await self._inject_cluster(fault, js, t0)
            if self._topping:  # a top-up still unsent: sent now, or the run fails here
                await self._add_jobs(js)
            await _until(lambda: self._settled(js, len(jobs)), self.config.timeout, "every job to end")
            await self._verify(js, jobs)
        finally:
            for bot in self.bots:
                bot.signal(signal.SIGCONT)
                bot.close()
            for proxy in self.proxies.values():
                await proxy.close()
            if nc is not None:
                await nc.close()
            self.cluster.close()
        self.report.seconds = round(time.monotonic() - t0, 2)
        return self.report

    def _mixed(self, n: int) -> list[Job]:
        """``n`` jobs that must succeed: short sleeps, echoes and sums."""
        out = []
        for i in range(n):
            roll = self.rng.random()
            if roll < 0.6:
                out.append(make_job("sleep", {"seconds": round(self.rng.uniform(0.01, 0.3), 3)}))
            elif roll < 0.8:
                out.append(make_job("echo", {"i": i, "pad": "x" * self.rng.randint(0, 512)}))
            else:
                out.append(make_job("sum", {"a": self.rng.randint(0, 1000), "b": self.rng.randint(0, 1000)}))
        return out

    def _jobs(self) -> list[Job]:
        jobs = self._mixed(self.config.jobs)
        jobs += [make_job("fail", {"p": 1.0, "message": "chaos: expected failure"}, max_attempts=1)
                 for _ in range(self.config.failing)]
        self.expected_dead = {j.id for j in jobs if j.kind == "fail"}
        self.report.expected_dead = len(self.expected_dead)
        self.rng.shuffle(jobs)
        return jobs

    @property
    def _slots(self) -> int:
        return self.config.bots * self.config.concurrency

    async def _before_fault(self, js) -> None:
        """Keep every bot busy for the next fault: sized to the fleet, since jobs here are short."""
        (backlog,) = await _until(lambda: _quiet(lambda: _boxed(unfinished(js))), 60, "the jobs consumers")
        if backlog < self._slots * 8:
            await self._add_jobs(js)

    async def _keep_busy(self, js) -> None:
        """Nothing is seen held yet: if the bots drained what there was meanwhile, give them more.

        A fault is aimed at jobs some bot holds, read from the bots' heartbeats. After a node's
        restart the heartbeats' bucket can be without a leader for several seconds, and short jobs
        drain in that time: without more work, no bot would ever be seen holding a job.
        """
        if self._topping or (await unfinished(js)) < self._slots:
            await self._add_jobs(js)

    async def _add_jobs(self, js) -> None:
        """Submit a top-up of ``25`` jobs a slot, or finish sending the one a failure interrupted.

        The jobs are counted in the run before they are sent, and a send that fails midway (a
        caller's poll swallows a server that is still coming back) is sent again, whole, on the
        next call: under the same ids, so the stream's dedupe collapses what had landed.
        """
        if not self._topping:
            self._topping = self._mixed(self._slots * 25)
            self.jobs += self._topping
        self.report.submitted += await _submit_all(js, self._topping)
        self._topping = []

    async def _ended(self, js, n: int) -> bool:
        results = await js.stream_info(RESULTS_STREAM)
        dead = await js.stream_info("CORRAL_DLQ")
        return results.state.messages + dead.state.messages >= n

    async def _all_held(self, js) -> list[str]:
        """Every job some live bot holds right now and that has no outcome yet."""
        async def find():
            held = [c.id for hb in await live_bots(js) for c in hb.current]
            held = [j for j in held if not await self._any_done(js, [j])]
            if not held or self._topping:
                await self._keep_busy(js)
            return held

        return await _until(lambda: _quiet(find), 30, "bots holding jobs")

    async def _held_alive(self, js) -> tuple[str, list[str]]:
        """A running bot holding unfinished jobs (a killed bot's liveness key outlives it by its TTL)."""
        alive = {b.name for b in self.bots if b.alive}

        async def find():
            for hb in await live_bots(js):
                held = [c.id for c in hb.current if hb.name in alive and not await self._any_done(js, [c.id])]
                if held and not self._topping:
                    return hb.name, held
            await self._keep_busy(js)
            return None

        return await _until(lambda: _quiet(find), 30, "a live bot holding a job")

    async def _all_done(self, js, job_ids: list[str]) -> bool:
        for job_id in job_ids:
            if not await self._any_done(js, [job_id]):
                return False
        return True

    async def _inject_cluster(self, fault: str, js, t0: float) -> None:
        if fault in ("kill_bot", "freeze_bot"):
            target, held = await self._held_alive(js)
        else:
            target, held = "", await self._all_held(js)
        start = time.monotonic()
        record = ClusterFaultRecord(fault, round(start - t0, 2), target, None, held=len(held))
        self.log.info("chaos.fault", fault=fault, held=len(held))

        async def recover() -> None:
            # Watched alongside the fault, so a node's restart is not counted as its recovery.
            await _until(lambda: _quiet(lambda: self._all_done(js, held)), 180, f"recovery from {fault}")
            record.recovery_s = round(time.monotonic() - start, 2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(recover)
            await self._strike(fault, target, record, start)
        self.report.faults.append(record)
        self.log.info("chaos.recovered", fault=fault, seconds=record.recovery_s, leader_s=record.leader_s)

    async def _strike(self, fault: str, target: str, record: ClusterFaultRecord, start: float) -> None:
        if fault in LEADER_OF:
            await self._kill_leader(LEADER_OF[fault], record, start)
        elif fault == "cut_node":
            record.target = max(self.proxies, key=lambda n: self.proxies[n].links)
            self.proxies[record.target].cut()
            await anyio.sleep(self.config.ack_wait + 1)
            self.proxies[record.target].heal()
        elif fault == "kill_bot":
            next(b for b in self.bots if b.name == target and b.alive).kill()
            self._start_bot(self.bot_url)
        elif fault == "freeze_bot":
            bot = next(b for b in self.bots if b.name == target and b.alive)
            bot.signal(signal.SIGSTOP)
            await anyio.sleep(self.config.ack_wait + 1)
            bot.signal(signal.SIGCONT)
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(CLUSTER_FAULTS)}")

    async def _kill_leader(self, stream: str, record: ClusterFaultRecord, start: float) -> None:
        """SIGKILL ``stream``'s leader; restart it on its store once another node leads."""
        leader = await _until(lambda: stream_leader(self.poll, stream), 30, f"a {stream} leader")
        record.target = leader
        self.cluster.kill(leader)
        await _until(lambda: _other_leader(self.poll, stream, leader), 60, f"a new {stream} leader")
        record.leader_s = round(time.monotonic() - start, 2)
        await anyio.to_thread.run_sync(self.cluster.restart, leader)
        # The next fault may take another node down: this one must be back first, or the
        # cluster would lose its quorum, which is not the fault under test.
        await anyio.to_thread.run_sync(self.cluster.wait_healthy, leader, 120.0)
        record.rejoined_s = round(time.monotonic() - start, 2)


async def _submit_all(js, jobs: list[Job], timeout: float = 120.0) -> int:
    """Submit until every job is accepted. A refused publish may still have landed (a timeout is
    ambiguous), so it is sent again under the same id, which the stream's dedupe collapses."""
    pending, deadline = jobs, time.monotonic() + timeout
    while pending:
        summary = await submit_many(js, pending)
        pending = [pending[i] for i, _, _ in summary.refused]
        if pending and time.monotonic() > deadline:
            raise ChaosStalledError(f"chaos: {len(pending)} jobs still refused after {timeout}s: {summary.refused[0][2]}")
    return len(jobs)


async def _other_leader(js, stream: str, old: str) -> str | None:
    leader = await stream_leader(js, stream)
    return leader if leader and leader != old else None


async def _ready(bots: list[BotProcess]) -> bool:
    return all(b.ready() for b in bots)


async def _provision_r3(nc, ack_wait: float) -> None:
    from corral.streams import load_declarations
    from corral.streams.provision import provision

    decls = [d.with_config(ack_wait=int(ack_wait * NS)) if d.kind == "consumer" else d.replicated(3)
             for d in load_declarations()]
    await provision(nc, decls)


async def run_cluster_chaos(config: ClusterChaosConfig, log: Logger, home: Path | None = None) -> ChaosReport:
    """Run the cluster suite in ``home`` (a fresh temporary folder by default)."""
    home = home or Path(tempfile.mkdtemp(prefix="corral-cluster-chaos-"))
    return await ClusterChaosRun(config, home, log).run()


__all__ = ["CLUSTER_FAULTS", "NODES", "ClusterChaosConfig", "ClusterFaultRecord", "run_cluster_chaos"]


async def _boxed(count):
    """A count in a tuple, so that zero still reads as an answer to ``_until``."""
    return (await count,)
