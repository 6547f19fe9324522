"""The fleet supervisor: keeps ``desired.<host>`` bots running on one machine.

One anyio task group holds the signal task, the supervisor's own heartbeat
(``supervisor.<host>`` in ``corral_fleet``, claimed by compare-and-set so a
second supervisor for the same host is refused), the watch on
``desired.<host>``, the hung-bot check, and one task per slot
(:mod:`corral.bots.fleet_slot`). Bots are ``corral bot`` child processes named
``<host>-<slot>``.

Stop order on SIGTERM/SIGINT:

1. stop reacting to ``desired`` changes, so nothing new starts while we leave;
2. SIGTERM every bot and wait for all of them: each finishes its running jobs,
   deregisters and exits 0 (a second signal is forwarded, and makes the bots
   hand their jobs back at once);
3. delete the supervisor key (watchers see the supervisor leave now);
4. drain and close the connection. Exit 0.

``desired`` is not touched: a restarted supervisor brings the same count back.

What the supervisor does *not* do while its own connection to NATS is down:
judge any bot hung. A missing liveness key then says more about the
supervisor's link than about the bot, and killing healthy bots in a network
partition would turn a blip into an outage.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import nats.errors
import nats.js.errors

from corral.bots.fleet_keys import (
    FLEET_BUCKET, FLEET_EVENTS_ACTION, FLEET_STREAM, MAX_BOTS_PER_HOST, SlotStatus, SupervisorBeat,
    check_host, decode_desired, decode_supervisor, desired_key, key_subject, slot_name,
    supervisor_key, write_desired,
)
from corral.bots.fleet_metrics import FleetMetrics
from corral.bots.fleet_slot import Backoff, Slot, SlotExit, SlotPolicy, SlotState
from corral.bots.liveness import Liveness, NameLostError
from corral.core.backlog import backlog
from corral.core.connect import TRANSIENT, api, connect, wait_for_resources
from corral.core.errors import CorralError, TransportError
from corral.core.log import Logger
from corral.core.messages import BotHeartbeat, Event, EventType, encode, heartbeat_decoder, new_id
from corral.core.names import BOTS_STREAM, bot_key_subject, ops_events_subject
from corral.core.publisher import AsyncPublisher
from corral.core.settings import Settings

LAUNCH_SCRIPT = Path(__file__).with_name("fleet_launch.py")


@dataclass(frozen=True)
class FleetConfig:
    """A supervisor's settings. Times are seconds."""

    host: str
    #: Write this desired count at start (``--count``); None keeps what the bucket says.
    initial_count: int | None = None
    #: The bots' liveness TTL (``corral bot --ttl``); a bot silent for 2 TTL is hung.
    bot_ttl: float = 10.0
    #: The supervisor key's TTL; refreshed every ttl/3.
    ttl: float = 10.0
    policy: SlotPolicy = SlotPolicy()
    #: Extra ``corral bot`` arguments (queue, concurrency, handlers...).
    bot_args: tuple[str, ...] = ()
    #: Per-slot log files here (``<host>-<slot>.log``); None: bots inherit the supervisor's stderr.
    log_dir: Path | None = None
    log_format: str = "logfmt"
    #: Serve Prometheus metrics on this port (``/metrics``); None: no endpoint.
    metrics_port: int | None = None

    @property
    def hung_after(self) -> float:
        return 2 * self.bot_ttl

    @property
    def heartbeat_interval(self) -> float:
        return self.ttl / 3


class SupervisorLiveness(Liveness):
    """:class:`corral.bots.liveness.Liveness` on ``$KV.corral_fleet.supervisor.<host>``.

    The claim, refresh and release logic is the bots'; only the key, the bucket
    and the value type differ. (Liveness could take those three as arguments;
    until then these overrides are the seam.)
    """

    def __init__(self, js, host: str, ttl: float, log: Logger) -> None:
        super().__init__(js, host, ttl, log)
        self.subject = key_subject(supervisor_key(host))

    async def _last(self):
        try:
            return await self.js.get_msg(FLEET_STREAM, subject=self.subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None

    @staticmethod
    def _decode(data: bytes | None) -> SupervisorBeat | None:
        return decode_supervisor(data)

    async def release(self) -> None:
        """Delete the key, also when a heartbeat cancelled by the shutdown landed after all."""
        try:
            last = await self._last()
        except (*TRANSIENT, nats.js.errors.APIError):
            last = None  # super().release() reports the failure
        holder = None if last is None else self._decode(last.data)
        if holder is not None and holder.incarnation == self.incarnation:
            self.seq = last.seq
        await super().release()

    def _taken(self, holder: SupervisorBeat | None) -> str:
        if holder is None:
            return f"fleet host {self.name!r} is held by a live supervisor"
        return (
            f"fleet host {self.name!r} already has a live supervisor (pid {holder.pid} on {holder.host}, "
            f"incarnation {holder.incarnation}); stop it or pick another --host"
        )


class BotLauncher:
    """Starts ``corral bot --name <name>`` through :mod:`corral.bots.fleet_launch` (dies with the supervisor)."""

    def __init__(self, settings: Settings, config: FleetConfig) -> None:
        self.settings = settings
        self.config = config

    def command(self, name: str) -> list[str]:
        bot = [sys.executable, "-m", "corral.cli", "--log-format", self.config.log_format, "bot",
               "--name", name, "--ttl", f"{self.config.bot_ttl:g}", *self.config.bot_args]
        return [sys.executable, str(LAUNCH_SCRIPT), str(os.getpid()), *bot]

    async def __call__(self, name: str) -> anyio.abc.Process:
        # The server list travels in the environment, not argv: URLs may hold credentials,
        # and argv is visible to every user in `ps`.
        env = {**os.environ, "CORRAL_NATS_URL": ",".join(self.settings.servers), "PYTHONUNBUFFERED": "1"}
        out = None
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.config.log_dir / f"{name}.log", "ab")
        try:
            # A new session: a Ctrl-C in the supervisor's terminal reaches the supervisor only,
            # which then drains the bots in order instead of all of them at once.
            return await anyio.open_process(
                self.command(name), stdin=None, stdout=out, stderr=out, env=env, start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()


class Supervisor:
    def __init__(self, settings: Settings, config: FleetConfig, log: Logger, launcher=None) -> None:
        self.settings = settings.named(f"corral-fleet-{config.host}")
        self.config = config
        self.host = check_host(config.host)
        self.incarnation = new_id()[:12]
        self.log = log.bind(host=self.host, inc=self.incarnation)
        self.launcher = launcher or BotLauncher(settings, config)
        self.metrics = FleetMetrics(self.host) if config.metrics_port is not None else None
        self.started_at = time.time()
        self.desired = 0
        self.slots: dict[int, Slot] = {}
        self.exit_code = 0
        self._stopping = anyio.Event()
        self._signals_seen = 0
        self._beat_now = anyio.Event()
        self._watch_scope: anyio.CancelScope | None = None
        self._beating = True
        self._heartbeat_done = anyio.Event()
        self._slot_tg: anyio.abc.TaskGroup | None = None
        self._claimed = False
        self._blind = False  #: the last hung check could not see NATS

    # -- what the supervisor reports ---------------------------------------------------------

    def beat(self) -> SupervisorBeat:
        slots = [
            SlotStatus(slot=s.number, name=s.name, state=s.state, pid=s.pid, exits=s.exits,
                       last_code=s.last_code, retry_in=None if s.retry_in() is None else round(s.retry_in(), 1))
            for s in sorted(self.slots.values(), key=lambda s: s.number)
        ]
        return SupervisorBeat(
            name=self.host, incarnation=self.incarnation, host=socket.gethostname(), pid=os.getpid(),
            started_at=self.started_at, heartbeat_at=time.time(), desired=self.desired,
            connected=bool(getattr(self, "nc", None) and self.nc.is_connected), slots=slots,
            crash_loop=[s.name for s in slots if s.exits >= self.config.policy.crash_loop_after],
        )

    # -- main ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until signalled; returns the process exit code."""
        if self.metrics is not None:
            self.metrics.serve(self.config.metrics_port)
        self.nc = await connect(self.settings, self.log, on_disconnect=self._on_disconnect, on_reconnect=self._on_reconnect)
        self.js = self.nc.jetstream()
        self.publisher = AsyncPublisher(self.js, self.log)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(self.publisher.run_expiry)
                await self._start_up()
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._watch_desired)
                tg.start_soon(self._hung_check_loop)
                if self.metrics is not None:
                    tg.start_soon(self._backlog_loop)
                async with anyio.create_task_group() as slots:
                    self._slot_tg = slots
                    self._reconcile()
                    await self._stopping.wait()
                    self.log.info("fleet.stopping", bots=len(self.slots))
                    self._reconcile()  # target 0 now: every slot drains
                await self._shut_down()
                tg.cancel_scope.cancel()
        except CorralError as e:
            self.log.error("fleet.failed", error=str(e))
            self.exit_code = self.exit_code or 1
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(5):
                    if self.nc.is_connected:
                        await self.nc.drain()
                if not self.nc.is_closed:
                    await self.nc.close()
        self.log.info("fleet.exit", code=self.exit_code)
        return self.exit_code

    async def _start_up(self) -> None:
        await wait_for_resources(self.js, self.log, [FLEET_STREAM, BOTS_STREAM])
        self.liveness = SupervisorLiveness(self.js, self.host, self.config.ttl, self.log)
        await self.liveness.claim(self.beat())
        self._claimed = True
        if self.config.initial_count is not None:
            await write_desired(self.js, self.host, self.config.initial_count, f"fleet@{socket.gethostname()}")
        self.log.info("fleet.ready", bot_ttl=self.config.bot_ttl, hung_after=self.config.hung_after)

    async def _shut_down(self) -> None:
        with anyio.CancelScope(shield=True):
            # Let a heartbeat in flight finish first: one cancelled mid-publish may still land
            # after the delete's compare-and-set was computed, and the delete would be refused.
            self._beating = False
            self._beat_now.set()
            with anyio.move_on_after(5):
                await self._heartbeat_done.wait()
            await self.publisher.flush(5)
            await self.liveness.release()

    def stop(self) -> None:
        self._stopping.set()

    # -- desired count ---------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Make the set of wanted slots 1..target; idempotent, called on every change."""
        if self._slot_tg is None:
            return
        target = 0 if self._stopping.is_set() else self.desired
        for number in range(1, target + 1):
            slot = self.slots.get(number)
            if slot is None:
                slot = Slot(number, slot_name(self.host, number), self.launcher, self.config.policy, self._on_exit, self.log)
                self.slots[number] = slot
                self._slot_tg.start_soon(self._run_slot, slot)
            slot.wanted = True
        for number, slot in self.slots.items():
            if number > target:
                slot.wanted = False
        self._beat_now.set()

    async def _run_slot(self, slot: Slot) -> None:
        try:
            await slot.run()
        finally:
            # No await between run() returning and this: a slot wanted again in between is impossible.
            if self.slots.get(slot.number) is slot:
                del self.slots[slot.number]
            self._beat_now.set()

    def _set_desired(self, count: int, by: str) -> None:
        count = max(0, min(count, MAX_BOTS_PER_HOST))  # a hand-written value is clamped, not obeyed
        if count != self.desired:
            self.log.info("fleet.desired", old=self.desired, new=count, by=by or "?")
        self.desired = count
        self._reconcile()

    async def _watch_desired(self) -> None:
        """Follow ``desired.<host>``; a reconnect cancels the watch and starts a fresh one.

        nats-py's ordered-consumer watch can take ~17 s to notice a server restart
        (docs/nats-notes.md#kv-watches-across-reconnects), so the reconnect callback does not wait for it.
        """
        while True:
            with anyio.CancelScope() as scope:
                self._watch_scope = scope
                try:
                    await self._follow_desired()
                except (*TRANSIENT, nats.js.errors.APIError) as e:
                    self.log.warning("fleet.watch_failed", error=str(e) or type(e).__name__, hint="retrying on reconnect or in 5s")
                    await anyio.sleep(5)  # cancelled early by a reconnect

    async def _follow_desired(self) -> None:
        kv = await self.js.key_value(FLEET_BUCKET)
        watcher = await kv.watch(desired_key(self.host))
        try:
            async for entry in watcher:
                if entry is None:
                    continue  # end of the initial values
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self._set_desired(0, "deleted")
                    continue
                desired = decode_desired(entry.value)
                if desired is None:
                    self.log.warning("fleet.desired_invalid", value=entry.value[:100])
                    continue
                self._set_desired(desired.count, desired.by)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await watcher.stop()
                except (*TRANSIENT, nats.errors.Error):
                    pass  # the connection is gone; so is the subscription

    async def _on_disconnect(self) -> None:
        self._beat_now.set()

    async def _on_reconnect(self) -> None:
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        self._beat_now.set()

    # -- exits, hung bots ---------------------------------------------------------------------------

    async def _on_exit(self, ex: SlotExit) -> None:
        self._beat_now.set()
        if ex.requested:
            return
        if self.metrics is not None:
            self.metrics.exited(ex)
        fields = dict(slot=ex.slot, bot=ex.name, pid=ex.pid, code=ex.code, uptime=round(ex.uptime, 1),
                      exits=ex.exits, retry_in=None if ex.retry_in is None else round(ex.retry_in, 2))
        if ex.crash_loop:
            self.log.error("fleet.crash_loop", **fields)
        else:
            self.log.warning("fleet.exited", hung=ex.hung or None, **fields)
        what = "crash_loop" if ex.crash_loop else "hung" if ex.hung else "exited"
        detail = f"{what}: bot {ex.name} pid {ex.pid} code {ex.code} after {ex.uptime:.1f}s, exit {ex.exits} in a row"
        if ex.retry_in is not None:
            detail += f", restart in {ex.retry_in:.1f}s"
        event = Event(type=EventType.OPERATOR, ts=time.time(), bot=ex.name, state=what, detail=detail,
                      actor=f"fleet:{self.host}@{socket.gethostname()}", incarnation=self.incarnation)
        if self.nc.is_connected:
            await self.publisher.fire(ops_events_subject(FLEET_EVENTS_ACTION), encode(event))

    async def _hung_check_loop(self) -> None:
        # Periodic by nature: liveness is a heartbeat, so is checking it.
        while True:
            await anyio.sleep(self.config.bot_ttl / 2)
            await self._check_hung()

    async def _check_hung(self) -> None:
        """Kill bots whose process runs but whose liveness key has been missing for over 2 TTL."""
        running = [s for s in list(self.slots.values()) if s.state == SlotState.RUNNING and s.pid]
        if not running:
            return
        try:
            entries = {s.name: await self._bot_entry(s.name) for s in running} if await self._link_ok() else None
        except (*TRANSIENT, nats.errors.Error):
            entries = None
        if entries is None:
            # Our own link is down: we cannot tell a hung bot from a partition. Restart nothing.
            self.log.warning("fleet.hung_check_skipped", reason="supervisor not connected to NATS; restarting nothing")
            self._blind = True
            return
        now = anyio.current_time()  # after the reads, which may have waited on a slow server
        if self._blind:
            # The first look after a blind spell: start every bot's clock now, so each gets a
            # full 2 TTL to re-register (its own heartbeat may still be timing out).
            self._blind = False
            for s in running:
                s.last_seen = now
        for s in running:
            entry = entries[s.name]
            if entry is not None and entry.pid == s.pid:
                s.last_seen = now
            elif now - s.last_seen > self.config.hung_after and s.state == SlotState.RUNNING:
                self.log.error("fleet.hung", slot=s.number, bot=s.name, pid=s.pid, silent=round(now - s.last_seen, 1))
                s.kill_hung()

    async def _link_ok(self) -> bool:
        """Whether JetStream answers us right now (a round trip, not just the socket state).

        Not ``nc.flush(timeout)``: in nats-py 2.16 a flush that times out leaves its
        cancelled future queued, and the late PONG then crashes the read loop.
        """
        if not self.nc.is_connected:
            return False
        try:
            await api(self.nc, "INFO", timeout=2)
        except (*TRANSIENT, nats.js.errors.APIError):
            return False
        return True

    async def _bot_entry(self, name: str) -> BotHeartbeat | None:
        try:
            msg = await self.js.get_msg(BOTS_STREAM, subject=bot_key_subject(name), direct=True)
        except nats.js.errors.NotFoundError:
            return None
        h = msg.headers or {}
        if h.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in h or not msg.data:
            return None
        try:
            return heartbeat_decoder.decode(msg.data)
        except ValueError:
            return None

    # -- background tasks ----------------------------------------------------------------------

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self._signals_seen += 1
                self.log.info("fleet.signal", signal=signal.Signals(signum).name, count=self._signals_seen)
                if not self._claimed:
                    scope.cancel()  # still starting: nothing to drain
                elif self._signals_seen == 1:
                    self.stop()
                else:
                    for slot in list(self.slots.values()):
                        slot.signal(signal.SIGTERM)  # a bot's second signal: hand jobs back now

    async def _backlog_loop(self, interval: float = 5.0) -> None:
        """Export the backlog an external autoscaler (KEDA, an HPA) would scale on."""
        while True:
            if self.nc.is_connected:
                try:
                    for b in await backlog(self.js):
                        self.metrics.backlog.labels(b.consumer).set(b.total)
                        self.metrics.oldest.labels(b.consumer).set(b.oldest_age)
                except (CorralError, nats.js.errors.APIError, *TRANSIENT) as e:
                    self.log.warning("fleet.backlog_failed", error=str(e) or type(e).__name__)
            await anyio.sleep(interval)

    async def _heartbeat_loop(self) -> None:
        """Refresh the supervisor key every ttl/3, and at once after a change."""
        try:
            await self._beat_until_stopped()
        finally:
            self._heartbeat_done.set()

    async def _beat_until_stopped(self) -> None:
        while self._beating:
            with anyio.move_on_after(self.config.heartbeat_interval):
                await self._beat_now.wait()
            self._beat_now = anyio.Event()
            if not self._beating:
                return
            beat = self.beat()
            if self.metrics is not None:
                self.metrics.observe(beat)
            if not self.nc.is_connected:
                continue
            try:
                await self.liveness.beat(beat)
            except NameLostError as e:
                self.log.error("fleet.host_lost", error=str(e), hint="another supervisor took this host; stopping our bots")
                self.exit_code = 4
                self.stop()
                return
            except (TransportError, nats.js.errors.APIError) as e:
                self.log.warning("fleet.heartbeat_failed", error=str(e) or type(e).__name__)


__all__ = ["Backoff", "BotLauncher", "FleetConfig", "SlotPolicy", "Supervisor", "SupervisorLiveness"]
