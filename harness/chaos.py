"""The chaos suite: run a fleet, inject faults, prove from the streams that nothing was lost.

`corral chaos` starts its own nats-server (nats.conf, temporary store), a few
real bot processes, and submits a known set of jobs: mostly ``sleep`` jobs
that must succeed, plus ``fail`` jobs that must end dead-lettered. While they
run it injects, one after another:

* ``kill_bot``: SIGKILL a bot that holds a job (a crash mid-job);
* ``restart_server``: SIGKILL the server and start it again on the same store;
* ``freeze_server``: SIGSTOP the server for longer than the ack deadline;
* ``cut_bot``: sever a bot's network path (it connects through a TCP proxy
  owned by the suite) for longer than the ack deadline;
* ``poison``: submit a ``crash`` job (it kills whichever bot runs it) in one
  batch with sleepers; it must end quarantined, and the sleepers complete;
* ``garbage``: publish undecodable bytes raw on the jobs subject; each must
  end as one dead letter.

The suite supervises its bots as the fleet supervisor would: a bot that dies
(the poison job's victims, or ``kill_bot``'s) is replaced under a new name.

Each fault's recovery time is measured from the fault to the completion of a
job in flight when it struck (for ``poison`` and ``garbage``: to their dead
letters). At the end every submitted job must have exactly one recorded result
or exactly one dead letter, none both, none neither; the crash job and the
garbage count as dead letters, not as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
import nats
import nats.errors
import nats.js.errors

from corral.core.connect import TRANSIENT
from corral.core.dlq import DeadLetter, list_dead
from corral.core.errors import CorralError
from corral.core.history import job_result, results_per_job
from corral.core.log import Logger
from corral.core.backlog import unfinished
from corral.core.messages import Job, make_job
from corral.core.names import RESULTS_STREAM, job_subject
from corral.harness.procs import BotProcess
from corral.harness.server import EmbeddedServer, free_port
from corral.core.status import live_bots
from corral.core.submit import submit_many
from corral.streams import load_declarations
from corral.streams.provision import provision_url

NS = 1_000_000_000
FAULTS = ("kill_bot", "restart_server", "freeze_server", "cut_bot", "poison", "garbage")
#: What the ``garbage`` fault publishes: bytes that are not a job, each a dead letter of its own.
GARBAGE = (b"\x00\xff not a job", b'{"id": "truncated", "kind": "sle', b"[]")
#: Every chaos bot's options (the cluster suite's too). The retry cap is also how long a bot waits
#: before storing a dead letter again when the DLQ did not answer (a restart, an election): at the
#: default 60 s one such miss held the whole verdict back a minute.
BOT_ARGS = ("--publish-timeout", "2", "--backoff-base", "0.2", "--backoff-max", "2", "--sweep-interval", "5")


@dataclass
class FaultRecord:
    fault: str
    at: float  #: seconds since the run started
    target: str
    recovery_s: float | None  #: fault to the completion of a job in flight when it struck


@dataclass
class ChaosReport:
    submitted: int = 0
    expected_dead: int = 0
    completed: int = 0
    dead: int = 0
    garbage: int = 0  #: undecodable payloads published
    garbage_dead: int = 0  #: their dead letters
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  #: ended the wrong way (a sleep job dead, a fail job done)
    faults: list[FaultRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


class Proxy:
    """A TCP proxy on loopback whose links can be cut: the network path of one bot."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.blocked = False
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    @property
    def links(self) -> int:
        """Open connections through the proxy (each counted once, not per direction)."""
        return len(self._writers) // 2

    def cut(self) -> None:
        self.blocked = True
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        self._server.close()


@dataclass
class ChaosConfig:
    jobs: int = 120
    failing: int = 10  #: extra ``fail`` jobs that must end dead-lettered
    bots: int = 3
    ack_wait: float = 3.0
    faults: tuple[str, ...] = FAULTS
    seed: int | None = None
    timeout: float = 240.0


class ChaosRun:
    def __init__(self, config: ChaosConfig, home: Path, log: Logger) -> None:
        self.config = config
        self.home = home
        self.log = log.bind(component="chaos")
        self.rng = random.Random(config.seed)
        self.report = ChaosReport()
        self.bots: list[BotProcess] = []
        self._serial = 0
        self._replaced: set[str] = set()

    def _start_bot(self, url: str, name: str | None = None) -> BotProcess:
        self._serial += 1
        bot = BotProcess(url, name or f"chaos-{self._serial}", self.home / "bots", "--concurrency", "2", *BOT_ARGS)
        self.bots.append(bot)
        return bot

    async def _supervise(self) -> None:
        """Replace every bot that died, on the same path (direct or proxied), under a new name."""
        while True:
            for bot in list(self.bots):
                if not bot.alive and bot.name not in self._replaced:
                    self._replaced.add(bot.name)
                    self._start_bot(bot.url, f"{bot.name.split('_r')[0]}_r{self._serial + 1}")
            await anyio.sleep(0.1)

    async def run(self) -> ChaosReport:
        t0 = time.monotonic()
        server = EmbeddedServer(self.home / "nats").start()
        proxy = Proxy(server.port)
        nc = None
        try:
            await _provision(server.url, self.config.ack_wait)
            await proxy.start()
            nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            js = nc.jetstream()
            for _ in range(self.config.bots - 1):
                self._start_bot(server.url)
            self.proxied = self._start_bot(f"nats://127.0.0.1:{proxy.port}", "chaos-proxied")
            await _until(lambda: _now(all(b.ready() for b in self.bots)), 30, "bots ready")
            jobs = self._jobs()
            summary = await submit_many(js, jobs)
            self.report.submitted = summary.accepted
            self.log.info("chaos.submitted", jobs=summary.accepted)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._supervise)
                for fault in self.config.faults:
                    jobs += await self._top_up(js)
                    jobs += await self._inject(fault, server, proxy, js, t0)
                total = len(jobs) + self.report.garbage
                await _until(lambda: self._settled(js, total), self.config.timeout, "every job to end")
                tg.cancel_scope.cancel()
            await self._verify(js, jobs)
        finally:
            for bot in self.bots:
                bot.close()
            await proxy.close()
            if nc is not None:
                await nc.close()
            server.resume()
            server.kill()
        self.report.seconds = round(time.monotonic() - t0, 2)
        return self.report

    def _jobs(self) -> list[Job]:
        jobs = [make_job("sleep", {"seconds": round(self.rng.uniform(0.2, 1.0), 3)}) for _ in range(self.config.jobs)]
        jobs += [make_job("fail", {"p": 1.0, "message": "chaos: expected failure"}, max_attempts=1) for _ in range(self.config.failing)]
        self.expected_dead = {j.id for j in jobs if j.kind == "fail"}
        self.report.expected_dead = len(self.expected_dead)
        self.rng.shuffle(jobs)
        return jobs

    async def _top_up(self, js, low: int = 12, batch: int = 20) -> list[Job]:
        """Keep work in flight for the next fault: submit more jobs when the backlog runs low."""
        backlog = await unfinished(js)  # the stream's count includes acked jobs awaiting the purge
        if backlog >= low:
            return []
        more = [make_job("sleep", {"seconds": round(self.rng.uniform(0.2, 1.0), 3)}) for _ in range(batch)]
        summary = await submit_many(js, more)
        self.report.submitted += summary.accepted
        return more

    async def _held(self, js, bot: str | None = None, exclude: str | None = None) -> tuple[str, list[str]]:
        """A bot currently holding jobs, and those job ids (from the liveness bucket)."""
        async def find():
            for hb in await live_bots(js):
                if hb.current and (bot is None or hb.name == bot) and hb.name != exclude:
                    # A heartbeat is up to ttl/3 old: keep only jobs still unfinished, so the
                    # recovery measured is from the fault, not from a job that already ended.
                    held = [c.id for c in hb.current if not await self._any_done(js, [c.id])]
                    if held:
                        return hb.name, held
            return None

        return await _until(lambda: _quiet(find), 30, f"a bot holding a job ({bot or 'any'})")

    async def _inject(self, fault: str, server: EmbeddedServer, proxy: Proxy, js, t0: float) -> list[Job]:
        """Inject one fault and wait for recovery; returns the jobs the fault itself submitted."""
        if fault in ("poison", "garbage"):
            return await self._bad_input(fault, js, t0)
        target, held = await self._held(js, bot="chaos-proxied" if fault == "cut_bot" else None,
                                        exclude="chaos-proxied" if fault == "kill_bot" else None)
        start = time.monotonic()
        self.log.info("chaos.fault", fault=fault, target=target, held=len(held))
        if fault == "kill_bot":
            victim = next(b for b in self.bots if b.name == target and b.alive)
            victim.kill()  # the supervisor replaces it
        elif fault == "restart_server":
            target = "nats-server"
            server.kill()
            server.start()
        elif fault == "freeze_server":
            target = "nats-server"
            server.pause()
            await anyio.sleep(self.config.ack_wait + 1)
            server.resume()
        elif fault == "cut_bot":
            proxy.cut()
            await anyio.sleep(self.config.ack_wait + 1)
            proxy.heal()
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        await self._recovered(fault, target, start, t0, lambda: self._any_done(js, held))
        return []

    async def _bad_input(self, fault: str, js, t0: float) -> list[Job]:
        """``poison``: a crash job among sleepers, claimed together; ``garbage``: raw undecodable payloads."""
        start = time.monotonic()
        if fault == "garbage":
            for data in GARBAGE:
                await js.publish(job_subject("default"), data)
            self.report.garbage += len(GARBAGE)
            self.log.info("chaos.fault", fault=fault, target="jobs stream", held=len(GARBAGE))
            await self._recovered(fault, "jobs stream", start, t0, lambda: self._garbage_dead(js))
            return []
        crasher = make_job("crash", {}, max_attempts=10)
        batch = [make_job("sleep", {"seconds": round(self.rng.uniform(0.2, 1.0), 3)}) for _ in range(8)]
        batch.insert(self.rng.randrange(len(batch)), crasher)
        self.expected_dead.add(crasher.id)
        self.report.expected_dead += 1
        self.report.submitted += (await submit_many(js, batch)).accepted
        self.log.info("chaos.fault", fault=fault, target=crasher.id, held=len(batch))
        await self._recovered(fault, crasher.id, start, t0, lambda: self._any_done(js, [crasher.id]))
        return batch

    async def _garbage_dead(self, js) -> bool:
        return len(await list_dead(js, match=lambda d: d.job_id.startswith("invalid-"))) >= self.report.garbage

    async def _recovered(self, fault: str, target: str, start: float, t0: float, done) -> None:
        """Wait for ``done()`` and record the fault with its recovery time."""
        recovered = await _until(lambda: _quiet(done), 120, f"recovery from {fault}")
        recovery = round(time.monotonic() - start, 2) if recovered else None
        self.report.faults.append(FaultRecord(fault, round(start - t0, 2), target, recovery))
        self.log.info("chaos.recovered", fault=fault, seconds=recovery)

    async def _any_done(self, js, job_ids: list[str]) -> bool:
        for job_id in job_ids:
            if job_id in self.expected_dead:
                if await list_dead(js, match=_letter_of(job_id)):
                    return True
            elif await job_result(js, job_id) is not None:
                return True
        return False

    async def _settled(self, js, total: int) -> bool:
        try:
            pending = await unfinished(js)
            results = await js.stream_info(RESULTS_STREAM)
            dead = await js.stream_info("CORRAL_DLQ")
        except (nats.js.errors.APIError, *TRANSIENT):
            return False
        return pending == 0 and results.state.messages + dead.state.messages >= total

    async def _verify(self, js, jobs: list[Job]) -> None:
        dead: dict[str, int] = {}
        for d in await list_dead(js):
            dead[d.job_id] = dead.get(d.job_id, 0) + 1
        # One result per job is one message under corral.results.<job>.*: a second one, by any bot, is a duplicate.
        per_job = await results_per_job(js)
        recorded = 0
        for job in jobs:
            n_results = per_job.pop(job.id, 0)
            recorded += n_results > 0
            n_dead = dead.get(job.id, 0)
            if not n_results and not n_dead:
                self.report.lost.append(job.id)
            elif (n_results and n_dead) or n_dead > 1 or n_results > 1:
                self.report.duplicated.append(job.id)
            elif (job.id in self.expected_dead) != bool(n_dead):
                self.report.unexpected.append(job.id)
        if per_job:  # a result for a job nobody submitted
            self.report.duplicated.append(f"{sum(per_job.values())} stray results")
        self.report.garbage_dead = sum(n for job_id, n in dead.items() if job_id.startswith("invalid-"))
        if self.report.garbage_dead < self.report.garbage:
            self.report.lost.append(f"{self.report.garbage - self.report.garbage_dead} garbage payloads without a dead letter")
        elif self.report.garbage_dead > self.report.garbage:
            self.report.duplicated.append(f"{self.report.garbage_dead - self.report.garbage} extra garbage dead letters")
        self.report.completed = recorded
        self.report.dead = sum(dead.values()) - self.report.garbage_dead


async def _now(value):
    return value


def _letter_of(job_id: str) -> Callable[[DeadLetter], bool]:
    """A :func:`list_dead` filter for one job's dead letter."""
    return lambda d: d.job_id == job_id


async def _quiet(check):
    """Run a check, treating a server that is still coming back as 'not yet'."""
    try:
        return await check()
    except (nats.js.errors.APIError, *TRANSIENT):
        return None


class ChaosStalledError(CorralError):
    """The run never reached a state it waits for: a failed run (exit 1), not an unreachable server."""


async def _until(check, timeout: float, what: str):
    """Poll ``check`` until truthy; :class:`ChaosStalledError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await anyio.sleep(0.1)
    raise ChaosStalledError(f"chaos: timed out after {timeout}s waiting for {what}")


async def _provision(url: str, ack_wait: float) -> None:
    decls = [d.with_config(ack_wait=int(ack_wait * NS)) if d.kind == "consumer" else d for d in load_declarations()]
    await provision_url(url, decls)


async def run_chaos(config: ChaosConfig, log: Logger, home: Path | None = None) -> ChaosReport:
    """Run the suite in ``home`` (a fresh temporary folder by default)."""
    home = home or Path(tempfile.mkdtemp(prefix="corral-chaos-"))
    return await ChaosRun(config, home, log).run()
