"""The fleet supervisor end to end: real nats-server, real `corral fleet` and bot processes, no sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.core.fleet import FLEET_STREAM, decode_supervisor, read_desired, supervisor_key, write_desired
from corral.core.names import fleet_key_subject as key_subject
from corral.core.history import walk
from corral.core.messages import event_decoder
from corral.core.names import EVENTS_STREAM, ops_events_subject
from corral.core.status import live_bots
from corral.core.spawn import corral_argv
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

#: Short TTLs and backoff so every scenario fits in a few seconds.
FAST = ("--bot-ttl", "3", "--ttl", "3", "--backoff-base", "0.2", "--backoff-max", "2", "--stop-timeout", "15")


class FleetProcess:
    """A real `corral fleet` subprocess; its bots inherit its stderr, so one log holds both."""

    def __init__(self, url: str, host: str, log_dir: Path, *extra: str) -> None:
        self.host = host
        self.log_path = log_dir / f"fleet-{host}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            corral_argv("fleet", "--server", url, "--host", host, *FAST, *extra),
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self) -> None:
        """Drain like an operator would; kill only if that overruns (the bots then die with it)."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        if os.environ.get("FLEET_TEST_LOGS"):
            print(self.log())


@pytest.fixture
def fleet(provisioned, tmp_path: Path) -> Iterator[Callable[..., FleetProcess]]:
    """Factory: ``fleet(host, *extra_args)`` starts a supervisor; all are stopped at teardown."""
    started: list[FleetProcess] = []

    def start(host: str, *extra: str) -> FleetProcess:
        f = FleetProcess(provisioned.url, host, tmp_path, *extra)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


async def live_names(js, host: str) -> set[str]:
    return {b.name for b in await live_bots(js) if b.name.startswith(f"{host}-")}


async def live_pids(js, host: str) -> dict[str, int]:
    return {b.name: b.pid for b in await live_bots(js) if b.name.startswith(f"{host}-")}


def until_live(js, host: str, names: set[str]):
    async def check():
        return await live_names(js, host) == names
    return check


async def supervisor_beat(js, host: str):
    try:
        msg = await js.get_msg(FLEET_STREAM, subject=key_subject(supervisor_key(host)), direct=True)
    except Exception:  # noqa: BLE001 - NotFoundError: no supervisor (yet)
        return None
    return decode_supervisor(msg.data)


async def fleet_events(js) -> list:
    return [event_decoder.decode(m.data or b"") async for m in walk(js, EVENTS_STREAM, ops_events_subject("fleet"))]


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(corral_argv(*args, "--server", url),
                          capture_output=True, text=True, timeout=20)


async def test_scaling_0_to_3_to_1_to_0_starts_and_drains_bots_by_slot(js, provisioned, fleet):
    """Given a supervisor at 0, when scaled 3 -> 1 -> 0, then live bots follow and drained ones exit 0."""
    sup = fleet("h", "--count", "0")
    await eventually(lambda: supervisor_beat(js, "h"), what="the supervisor key")
    assert await live_names(js, "h") == set()

    done = run_cli(provisioned.url, "scale", "3", "--host", "h")
    assert done.returncode == 0, done.stderr
    await eventually(until_live(js, "h", {"h-1", "h-2", "h-3"}), what="3 live bots")

    await write_desired(js, "h", 1, "test@here")
    await eventually(until_live(js, "h", {"h-1"}), what="only h-1 left")
    await write_desired(js, "h", 0, "test@here")
    await eventually(until_live(js, "h", set()), what="no bots")

    async def three_stopped():
        stopped = [line for line in sup.log().splitlines() if "event=fleet.stopped" in line]
        return stopped if len(stopped) == 3 else None
    stopped = await eventually(three_stopped, what="3 bot processes to exit")  # the key goes just before the exit
    assert all("code=0" in line for line in stopped)
    assert "event=fleet.exited" not in sup.log()
    scale_events = [event_decoder.decode(m.data or b"") async for m in walk(js, EVENTS_STREAM, ops_events_subject("scale"))]
    assert any("host h: 0 -> 3" in (e.detail or "") for e in scale_events)


async def test_a_bot_killed_with_sigkill_is_replaced_under_its_own_name(js, provisioned, fleet):
    """Given 2 bots, when h-2 is SIGKILLed, then a new h-2 process registers and a fleet event says why."""
    fleet("h", "--count", "2")
    await eventually(until_live(js, "h", {"h-1", "h-2"}), what="2 live bots")
    before = await live_pids(js, "h")

    os.kill(before["h-2"], signal.SIGKILL)

    async def replaced():
        pids = await live_pids(js, "h")
        return pids.get("h-2") not in (None, before["h-2"]) and pids.get("h-1") == before["h-1"]
    await eventually(replaced, what="a new h-2")
    events = await eventually(lambda: fleet_events(js), what="a fleet event")
    assert events[0].bot == "h-2" and events[0].state == "exited" and "code -9" in events[0].detail


async def test_two_supervisors_with_different_hosts_keep_their_own_counts(js, provisioned, fleet):
    """Given hosts a (2 bots) and b (1 bot), when a is scaled to 0, then b keeps its bot."""
    fleet("a", "--count", "2")
    fleet("b", "--count", "1")
    await eventually(until_live(js, "a", {"a-1", "a-2"}), what="a's bots")
    await eventually(until_live(js, "b", {"b-1"}), what="b's bot")
    b_pid = (await live_pids(js, "b"))["b-1"]

    await write_desired(js, "a", 0, "test@here")

    await eventually(until_live(js, "a", set()), what="a at 0")
    assert await live_pids(js, "b") == {"b-1": b_pid}
    assert (await read_desired(js, "b")).count == 1


async def test_a_second_supervisor_for_the_same_host_is_refused(js, provisioned, fleet):
    """Given a live supervisor for h, when another starts for h, then it exits 1 and the first keeps going."""
    first = fleet("h", "--count", "1")
    await eventually(until_live(js, "h", {"h-1"}), what="h-1")
    holder = await supervisor_beat(js, "h")

    second = fleet("h")
    code = second.proc.wait(20)

    assert code == 1 and "already has a live supervisor" in second.log()
    assert first.proc.poll() is None
    assert (await supervisor_beat(js, "h")).incarnation == holder.incarnation
    assert await live_names(js, "h") == {"h-1"}


async def test_sigterm_drains_every_bot_then_the_supervisor_exits_0(js, provisioned, fleet):
    """Given 2 bots, when the supervisor gets SIGTERM, then both drain, its key is deleted and it exits 0."""
    sup = fleet("h", "--count", "2")
    await eventually(until_live(js, "h", {"h-1", "h-2"}), what="2 live bots")

    sup.signal(signal.SIGTERM)

    assert sup.proc.wait(20) == 0
    assert await live_names(js, "h") == set()
    assert await supervisor_beat(js, "h") is None
    assert (await read_desired(js, "h")).count == 2  # a restarted supervisor brings them back


async def test_a_bot_that_keeps_dying_backs_off_and_is_reported_as_a_crash_loop(js, provisioned, fleet):
    """Given bots that exit at start (a bad handler), then restarts back off and the slot shows as a crash loop."""
    sup = fleet("h", "--count", "1", "--", "--handler", "broken=no_such_module:fn")

    async def crash_loop():
        beat = await supervisor_beat(js, "h")
        return beat is not None and beat.crash_loop == ["h-1"]
    await eventually(crash_loop, what="h-1 in crash_loop")

    delays = [float(line.split("retry_in=")[1].split()[0]) for line in sup.log().splitlines()
              if "event=fleet.exited" in line or "event=fleet.crash_loop" in line]
    assert len(delays) >= 3 and delays[2] > delays[0]  # 0.2, 0.4, 0.8 s (+ jitter): backing off
    events = await fleet_events(js)
    assert any(e.state == "crash_loop" and e.bot == "h-1" for e in events)


async def test_a_hung_bot_is_killed_and_replaced(js, provisioned, fleet):
    """Given a bot frozen with SIGSTOP, when its key stays missing for 2 TTL, then it is killed and restarted."""
    sup = fleet("h", "--count", "1", "--bot-ttl", "2")  # hung after 4 s, checked every 1 s: the wait is 2 TTL
    await eventually(until_live(js, "h", {"h-1"}), what="h-1")
    old = (await live_pids(js, "h"))["h-1"]

    os.kill(old, signal.SIGSTOP)

    async def replaced():
        pid = (await live_pids(js, "h")).get("h-1")
        return pid is not None and pid != old
    await eventually(replaced, timeout=25, what="a new h-1")
    assert "event=fleet.hung" in sup.log()


async def test_a_supervisor_cut_off_from_nats_restarts_nothing(js, provisioned, fleet):
    """Given 1 bot, when the server freezes for over 2 bot TTLs and comes back, then the same bot carries on."""
    sup = fleet("h", "--count", "1")
    await eventually(until_live(js, "h", {"h-1"}), what="h-1")
    pid = (await live_pids(js, "h"))["h-1"]

    provisioned.pause()
    try:
        # Checks run every TTL/2 and each blind one waits 2 s for the server: 3 of them span > 2 TTL (6 s).
        await eventually(lambda: _skipped_checks(sup, 3), timeout=25, what="3 skipped hung checks")
    finally:
        provisioned.resume()
    resumed = time.time()

    async def same_bot_beating_well_after_resume():
        # Keys expired during the freeze; two hung checks (TTL/2 apart) must pass without a kill.
        bot = next((b for b in await live_bots(js) if b.name == "h-1"), None)
        return bot is not None and bot.pid == pid and bot.heartbeat_at > resumed + 3.5
    await eventually(same_bot_beating_well_after_resume, what="h-1 (same pid) beating 3.5 s after the resume")
    assert "event=fleet.hung " not in sup.log() and "event=fleet.exited" not in sup.log()


async def _skipped_checks(sup: FleetProcess, n: int) -> bool:
    return sup.log().count("event=fleet.hung_check_skipped") >= n


async def test_after_a_server_restart_the_supervisor_follows_new_desired_counts(provisioned, fleet):
    """Given a supervisor at 1, when the server restarts and h is scaled to 2, then h-2 starts promptly."""
    import nats

    nc = await nats.connect(provisioned.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    sup = fleet("h", "--count", "1")
    await eventually(until_live(js, "h", {"h-1"}), what="h-1")

    provisioned.kill()
    provisioned.start()
    await eventually(lambda: _async(sup.log().count("event=nats.reconnected") >= 1), what="the supervisor to reconnect")
    await write_desired(js, "h", 2, "test@here")

    # Well under the ~17 s an ordered-consumer watch needs to notice a restart by itself.
    await eventually(until_live(js, "h", {"h-1", "h-2"}), timeout=10, what="h-2 after the restart")
    await nc.close()


async def test_a_killed_supervisor_takes_its_bots_with_it_and_a_new_one_reclaims_the_host(js, provisioned, fleet):
    """Given 2 bots, when the supervisor is SIGKILLed, then the bots drain away and a new supervisor brings them back."""
    first = fleet("h", "--count", "2")
    await eventually(until_live(js, "h", {"h-1", "h-2"}), what="2 live bots")

    first.proc.kill()
    first.proc.wait()
    await eventually(until_live(js, "h", set()), what="the orphaned bots to drain away")

    fleet("h")  # no --count: the stored desired count (2) is the authority
    await eventually(until_live(js, "h", {"h-1", "h-2"}), what="both bots back under a new supervisor")


async def _async(value):
    return value


async def test_the_metrics_endpoint_reports_desired_and_running_bots(js, provisioned, fleet):
    """Given a supervisor with --metrics-port at 2 bots, then /metrics shows desired 2 and 2 running slots."""
    import urllib.error
    import urllib.request

    import anyio

    from corral.harness.server import free_port

    port = free_port()
    fleet("m", "--count", "2", "--metrics-port", str(port))
    await eventually(until_live(js, "m", {"m-1", "m-2"}), what="2 live bots")

    async def scrape():
        try:
            body = await anyio.to_thread.run_sync(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
        except (urllib.error.URLError, OSError):
            return None
        return body if 'corral_fleet_slots{host="m",state="running"} 2.0' in body else None
    body = await eventually(scrape, what="2 running slots in /metrics")
    assert 'corral_fleet_desired_bots{host="m"} 2.0' in body and 'corral_fleet_connected{host="m"} 1.0' in body


def _listening(pid: int, port: int) -> list[str]:
    import psutil

    return [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


async def test_the_metrics_endpoint_binds_loopback_unless_told_otherwise(js, provisioned, fleet):
    """Given one supervisor with --metrics-port and one also with --metrics-host 0.0.0.0, then the first listens
    on 127.0.0.1 only and the second on every interface."""
    from corral.harness.server import free_port

    default_port, open_port = free_port(), free_port()
    default = fleet("lo", "--count", "0", "--metrics-port", str(default_port))
    exposed = fleet("any", "--count", "0", "--metrics-port", str(open_port), "--metrics-host", "0.0.0.0")
    await eventually(lambda: _async(_listening(default.proc.pid, default_port) or None), what="the default endpoint")
    await eventually(lambda: _async(_listening(exposed.proc.pid, open_port) or None), what="the exposed endpoint")
    assert _listening(default.proc.pid, default_port) == ["127.0.0.1"]
    assert _listening(exposed.proc.pid, open_port) == ["0.0.0.0"]


def test_the_deploy_manifests_parse_and_name_real_resources_and_metrics():
    """Given deploy/, then manifests parse, KEDA names the real stream and consumer, and alerts use real metrics."""
    import re

    from corral.bots.fleet_metrics import FleetMetrics
    from corral.core.names import JOBS_STREAM, consumer_name

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    texts = {p.name: p.read_text() for p in deploy.rglob("*.yaml")}
    try:
        import yaml  # type: ignore[import-untyped]  # optional: PyYAML is not a dependency, the check runs where it is installed
    except ImportError:
        yaml = None  # PyYAML is not a dependency; the cross-checks below still run
    if yaml is not None:
        for name, text in texts.items():
            assert list(yaml.safe_load_all(text)), name
    keda = texts["keda-scaledobject.yaml"]
    assert f"stream: {JOBS_STREAM}" in keda and f"consumer: {consumer_name('default', 'normal')}" in keda
    exposed = {m.name for m in FleetMetrics("x").registry.collect()}
    used = set(re.findall(r"\b(corral_fleet_[a-z_]+)", texts["corral-fleet-rules.yaml"]))
    assert used and used <= exposed, used - exposed
    unit = (deploy / "corral-fleet.service").read_text()
    assert "KillMode=mixed" in unit and "corral fleet --host %i" in unit


async def test_the_supervisor_exports_the_backlog_an_autoscaler_scales_on(js, provisioned, fleet):
    """Given 5 jobs and no bots, /metrics shows a backlog of 5 and a positive oldest-job age."""
    import urllib.error
    import urllib.request

    import anyio

    from corral.core.messages import make_job
    from corral.harness.server import free_port
    from corral.core.submit import submit_many

    await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(5)])
    port = free_port()
    fleet("bk", "--count", "0", "--metrics-port", str(port))

    async def scrape():
        try:
            body = await anyio.to_thread.run_sync(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
        except (urllib.error.URLError, OSError):
            return None
        return body if 'corral_backlog_jobs{consumer="work-default-normal"} 5.0' in body else None

    body = await eventually(scrape, timeout=20, what="the backlog gauge")
    age = next(line for line in body.splitlines() if line.startswith('corral_backlog_oldest_seconds{consumer="work-default-normal"}'))
    assert float(age.split()[-1]) > 0
