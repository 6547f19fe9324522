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

The concerns live beside it: :mod:`~corral.bots.fleet_config` (settings, slot
credentials), :mod:`~corral.bots.fleet_spawn` (starting a bot),
:mod:`~corral.bots.fleet_desired` (following the count),
:mod:`~corral.bots.fleet_hung` (hung bots, and why a supervisor cut off from
NATS restarts nothing), :mod:`~corral.bots.fleet_liveness` (its own key).
"""

from __future__ import annotations

import os
import signal
import socket
import time

import anyio
import anyio.abc
import nats.js.errors

from corral.bots.fleet_config import FleetConfig, SlotCredentials
from corral.bots.fleet_desired import DesiredWatch
from corral.bots.fleet_hung import HungCheck
from corral.core.fleet import (
    FLEET_EVENTS_ACTION, FLEET_STREAM, SlotStatus, SupervisorBeat, check_host, slot_name, write_desired,
)
from corral.bots.fleet_liveness import SupervisorLiveness
from corral.bots.fleet_metrics import FleetMetrics
from corral.bots.fleet_slot import Backoff, Slot, SlotExit, SlotPolicy
from corral.bots.fleet_spawn import BotLauncher
from corral.bots.liveness import NameLostError
from corral.core.backlog import backlog
from corral.core.connect import TRANSIENT, connect, wait_for_resources
from corral.core.errors import CorralError, TransportError
from corral.core.log import Logger
from corral.core.logship import ship_logs
from corral.core.messages import Event, EventType, encode, new_id
from corral.core.names import BOTS_STREAM, ops_events_subject
from corral.core.publisher import AsyncPublisher
from corral.core.settings import Settings


class Supervisor:
    """Keeps ``desired.<host>`` slots running until signalled; :meth:`run` is the whole process."""

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
        self._desired_watch: DesiredWatch | None = None
        self._beating = True
        self._heartbeat_done = anyio.Event()
        self._slot_tg: anyio.abc.TaskGroup | None = None
        self._claimed = False

    # -- what the supervisor reports ---------------------------------------------------------

    def beat(self) -> SupervisorBeat:
        slots = [
            SlotStatus(slot=s.number, name=s.name, state=s.state, pid=s.pid, exits=s.exits,
                       last_code=s.last_code, retry_in=None if (wait := s.retry_in()) is None else round(wait, 1),
                       restarts=s.restarts, last_exit=s.last_exit, last_exit_at=s.last_exit_at, started_at=s.started_at,
                       crash_loop=s.exits >= self.config.policy.crash_loop_after)
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
        if self.metrics is not None and self.config.metrics_port is not None:  # one is set exactly when the other is
            self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
        self.nc = await connect(self.settings, self.log, on_disconnect=self._on_disconnect, on_reconnect=self._on_reconnect)
        ship_logs(self.nc, self.log, f"fleet-{self.host}")  # the dashboard's Logs screen (core/logship.py)
        self.js = self.nc.jetstream()
        self.hung = HungCheck(self.nc, self.config.hung_after, self.log)
        self._desired_watch = DesiredWatch(self.js, self.host, self._set_desired, self.log)
        self.publisher = AsyncPublisher(self.js, self.log)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(self.publisher.run_expiry)
                await self._start_up()
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._desired_watch.run)
                tg.start_soon(self._hung_check_loop)
                if self.metrics is not None:
                    tg.start_soon(self._backlog_loop, self.metrics)
                async with anyio.create_task_group() as slots:
                    self._slot_tg = slots
                    self._reconcile()
                    await self._stopping.wait()
                    # Stop order (module docstring): 1. the target is 0 from here on, so a
                    # desired change starts nothing; 2. every slot drains its bot, and this
                    # block waits for the last one to exit.
                    self.log.info("fleet.stopping", bots=len(self.slots))
                    self._reconcile()  # target 0 now: every slot drains
                await self._shut_down()  # 3. the supervisor key goes only once no bot is left
                tg.cancel_scope.cancel()
        except CorralError as e:
            self.log.error("fleet.failed", error=str(e))
            self.exit_code = self.exit_code or 1
        finally:
            # 4. drain and close the connection last: the deletes above needed it.
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
        if count != self.desired:
            self.log.info("fleet.desired", old=self.desired, new=count, by=by or "?")
        self.desired = count
        self._reconcile()

    async def _on_disconnect(self) -> None:
        self._beat_now.set()

    async def _on_reconnect(self) -> None:
        if self._desired_watch is not None:
            self._desired_watch.restart()
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
            await self.hung.check(list(self.slots.values()))

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

    async def _backlog_loop(self, metrics: FleetMetrics, interval: float = 5.0) -> None:
        """Export the backlog an external autoscaler (KEDA, an HPA) would scale on."""
        while True:
            if self.nc.is_connected:
                try:
                    for b in await backlog(self.js):
                        metrics.backlog.labels(b.consumer).set(b.total)
                        metrics.oldest.labels(b.consumer).set(b.oldest_age)
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


__all__ = ["Backoff", "BotLauncher", "FleetConfig", "SlotCredentials", "SlotPolicy", "Supervisor", "SupervisorLiveness"]
