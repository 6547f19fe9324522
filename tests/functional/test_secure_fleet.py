"""The whole fleet under nats-secure.conf: supervisor, bots, ledger and operator, each its own user.

Everything is real: the server runs the shipped secured profile with passwords
generated for this run (:class:`corral.harness.secure.SecureRun`, as
``corral up --secure`` does), the supervisor logs in as ``fleet-bot`` and starts
each bot as that slot's user, the ledger as ``ledger``, the operator's commands
as ``admin``. A permission denial reaches a client as a timeout that may well
be retried into success, so the test does not trust outcomes alone: it fails on
any violation in any process's log, the server's included.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import pytest

from corral.core.history import job_result
from corral.core.messages import make_job
from corral.core.status import live_bots
from corral.core.submit import submit
from corral.harness.secure import FLEET_HOST, LEDGER_USER, OPERATOR_USER, SUPERVISOR_USER, SecureRun
from corral.harness.server import SECURE_CONF, EmbeddedServer, free_port
from corral.core.spawn import corral_argv
from tests.conftest import FAST, eventually

pytestmark = pytest.mark.anyio

#: Short TTLs and backoff, as in test_fleet.py.
FLEET_FAST = ("--bot-ttl", "3", "--ttl", "3", "--backoff-base", "0.2", "--backoff-max", "2", "--stop-timeout", "15")
#: The server says "Publish Violation" / "Subscription Violation" / "Authorization Violation";
#: nats-py's error_cb (logged as nats.error) says "permissions violation for ...".
VIOLATION = re.compile(r"violation", re.IGNORECASE)


class System:
    """A secured server plus the corral processes started against it, and every log they write."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)
        self.run = SecureRun(SECURE_CONF)
        self.server = EmbeddedServer(home / "nats", config=SECURE_CONF, env=self.run.server_env(os.environ),
                                     log_file=self.logs / "nats-server.log")
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, label: str, user: str, *args: str) -> subprocess.Popen:
        """``corral ARGS`` as ``user``, its stdout and stderr in logs/<label>.log."""
        with open(self.logs / f"{label}.log", "ab") as out:
            proc = subprocess.Popen(corral_argv(*args), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env(user))
        self.procs[label] = proc
        return proc

    def corral(self, *args: str) -> subprocess.CompletedProcess:
        """A short `corral` command as the operator; its output is kept with the other logs."""
        done = subprocess.run(corral_argv(*args), capture_output=True, text=True,
                              env=self.env(OPERATOR_USER), timeout=60)
        with open(self.logs / "operator.log", "a") as log:
            log.write(f"$ corral {' '.join(args)}\n{done.stdout}{done.stderr}")
        return done

    def env(self, user: str) -> dict[str, str]:
        return {**self.run.env(os.environ, user), "CORRAL_NATS_URL": self.server.url, "PYTHONUNBUFFERED": "1"}

    def stop(self, label: str, timeout: float = 30) -> int:
        proc = self.procs[label]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def violations(self) -> list[str]:
        return [f"{path.name}: {line}" for path in sorted(self.logs.rglob("*.log"))
                for line in path.read_text(errors="replace").splitlines() if VIOLATION.search(line)]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.server.kill()
        self.run.close()


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    s = System(tmp_path)
    s.server.start()
    try:
        yield s
    finally:
        s.close()


async def operator_js(system: System):
    """The operator's connection, also recording what the server reported to it."""
    errors: list[str] = []

    async def error_cb(e: Exception) -> None:
        errors.append(str(e))
        async with await anyio.open_file(system.logs / "operator-connection.log", "a") as log:
            await log.write(f"nats.error {e}\n")

    s = system.run.settings(system.server.url, OPERATOR_USER)
    nc = await nats.connect(servers=list(s.servers), user=s.user, password=s.password, inbox_prefix=s.inbox_prefix,
                            error_cb=error_cb, allow_reconnect=False, connect_timeout=5)
    return nc


async def provision(nc) -> None:
    from corral.streams import load_declarations
    from corral.streams.provision import provision as apply

    await apply(nc, [d.with_config(**FAST) if d.kind == "consumer" else d for d in load_declarations()])


def until_live(js, names: set[str]):
    async def check():
        live = {b.name: b.pid for b in await live_bots(js) if b.name.startswith(f"{FLEET_HOST}-")}
        return live if set(live) == names else None
    return check


def scrape_backlog(port: int):
    async def check():
        try:
            body = await anyio.to_thread.run_sync(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
        except (urllib.error.URLError, OSError):
            return None
        m = re.search(r'corral_backlog_jobs\{consumer="work-default-normal"\} ([0-9.]+)', body)
        return m and float(m.group(1)) > 0
    return check


def ledger_count(system: System):
    async def check():
        done = await anyio.to_thread.run_sync(
            lambda: system.corral("query", "--format", "json", "--timeout", "5", "SELECT count(*) AS n FROM results"))
        if done.returncode != 0:
            return None
        rows = json.loads(done.stdout)
        row = rows[0] if isinstance(rows, list) and rows else rows
        return (row.get("n") if isinstance(row, dict) else row[0]) or None
    return check


async def test_the_whole_fleet_runs_under_the_secured_profile_with_no_permission_violation(system):
    """Given nats-secure.conf and one user per process, when the operator scales 0 -> 3 -> 1 and submits work,
    then bots start and drain by slot, every job's result is recorded (by the ledger too), a killed bot is
    replaced, and no log of any process, the server's included, shows a violation."""
    nc = await operator_js(system)
    js = nc.jetstream()
    try:
        await provision(nc)
        metrics = free_port()
        system.start("fleet", SUPERVISOR_USER, "fleet", "--host", FLEET_HOST, "--count", "0", *FLEET_FAST,
                     "--slot-credentials", str(system.run.slot_credentials), "--log-dir", str(system.logs / "bots"),
                     "--metrics-port", str(metrics))
        system.start("ledger", LEDGER_USER, "ledger", "--db", str(system.home / "ledger.duckdb"))

        # Work waits at 0 bots; the supervisor's backlog metric sees it (its read-only job permissions).
        jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(6)]
        for job in jobs:
            await submit(js, job)
        await eventually(scrape_backlog(metrics), timeout=30, what="the backlog in the supervisor's metrics")

        assert system.corral("scale", "3", "--host", FLEET_HOST).returncode == 0
        pids = await eventually(until_live(js, {"bot-1", "bot-2", "bot-3"}), timeout=60, what="bot-1..3 live")
        for job in jobs:
            result = await eventually(functools.partial(job_result, js, job.id), timeout=60, what=f"result of {job.id}")
            assert result.value == job.args["a"] + 1

        # A crash: the supervisor restarts the slot under the same user and reports it as an event.
        os.kill(pids["bot-3"], signal.SIGKILL)
        await eventually(lambda: _replaced(js, "bot-3", pids["bot-3"]), timeout=60, what="bot-3 replaced")

        assert system.corral("scale", "1", "--host", FLEET_HOST).returncode == 0
        await eventually(until_live(js, {"bot-1"}), timeout=60, what="only bot-1 live")
        await eventually(ledger_count(system), timeout=60, what="results in the ledger")

        assert system.stop("fleet") == 0
        assert system.stop("ledger") == 0
    finally:
        await nc.close()
    bot_logs = sorted(p.name for p in (system.logs / "bots").iterdir())
    assert bot_logs == ["bot-1.log", "bot-2.log", "bot-3.log"]
    assert system.violations() == []


async def _replaced(js, name: str, old_pid: int) -> bool:
    return any(b.name == name and b.pid != old_pid for b in await live_bots(js))


def test_each_process_of_a_secure_run_gets_only_its_own_password():
    """Given a SecureRun, then the server's environment holds every password, a child's holds only its own
    login, and each slot's password is in its own file that only this user can read."""
    run = SecureRun(SECURE_CONF)
    try:
        server = run.server_env({"CORRAL_BOT_1_PASSWORD": "stale", "HOME": "/h"})
        assert set(run.passwords) >= {"admin", "ledger", "fleet-bot", "bot-1", "sys"}
        assert all(server[var] == run.passwords[user] for user, var in run.users.items())
        child = run.env(server, SUPERVISOR_USER)
        assert [k for k in child if k.endswith("_PASSWORD")] == ["CORRAL_NATS_PASSWORD"]
        assert (child["CORRAL_NATS_USER"], child["CORRAL_NATS_INBOX_PREFIX"]) == ("fleet-bot", "_INBOX_fleet-bot")
        slot = run.slot_credentials / "bot-1"
        assert slot.read_text().strip() == run.passwords["bot-1"]
        assert slot.stat().st_mode & 0o077 == 0 and run.folder.stat().st_mode & 0o077 == 0
        assert sorted(p.name for p in run.slot_credentials.iterdir()) == [f"bot-{n}" for n in range(1, run.slots + 1)]
    finally:
        run.close()
    assert not run.folder.exists()
