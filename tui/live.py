"""The dashboard's live data: its NATS connection, the feed workers on a clock, their messages into the store.

:class:`LiveApp` is the layer of :class:`corral.tui.app.CorralApp` that keeps the
:class:`corral.tui.store.Store` current and nothing else. Long-lived feed workers
(``tui/feeds.py``) read NATS and post :mod:`corral.tui.messages`; the handlers here fold them
into the store; a clock tick restarts any feed that ended. Every worker error, a feed's or
an operator action's, lands in :meth:`LiveApp.worker_state`.

The dashboard outlives the server: the client reconnects forever
(``corral.core.connect``), the banner says when the server is unreachable, and the
clock restarts any feed that ended; the bots feed's KV watch is restarted on every
reconnect (docs/nats-notes.md#kv-watches-across-reconnects).

The Fleet screen is read on the clock and also at once whenever a supervisor or a desired
count is written: the app listens on the fleet bucket's subjects (plain core NATS, no
consumer), so a supervisor's report of a crash shows within a read, not a clock tick later.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TextIO, cast

import anyio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from textual import on, work
from textual.app import App
from textual.worker import Worker, WorkerState

from corral.core.connect import connect
from corral.core.log import Logger
from corral.core.names import fleet_key_subject
from corral.core.settings import Settings
from corral.core.watch import KVWatch
from corral.tui import feeds
from corral.tui.features import FeaturesReader
from corral.tui.screens.base import TaskScreen
from corral.tui.messages import (
    BotBeat, BotGone, ConnectionChanged, DeadLettersLoaded, EventArrived, FeaturesLoaded, FleetLoaded, FleetWritten,
    LogArrived, ServerStats, SnapshotTaken,
)
from corral.tui.store import Store

CLOCK_INTERVAL = 1.0  #: seconds between snapshots (and feed health checks)
DEAD_RELOAD = 10.0  #: seconds between dead-letter reloads when the DLQ count did not change
VARZ_INTERVAL = 5.0  #: seconds between reads of the monitoring endpoint
FEATURES_INTERVAL = 2.0  #: seconds between reads of schedules, groups and locks while the Features screen is shown
JS_TIMEOUT = 2.0  #: seconds a JetStream API request may take before the server counts as not answering


class _TextualLogStream(io.TextIOBase):
    """corral.core.log writes to a stream; on a full-screen terminal that stream must not be stderr."""

    def __init__(self, app: App) -> None:
        self.app = app

    def write(self, s: str) -> int:
        self.app.log.info(s.rstrip())
        return len(s)


class LiveApp(App):
    """An app that connects to NATS, supervises the feed workers and folds what they post into :attr:`store`."""

    def __init__(self, settings: Settings, monitor_url: str | None = None) -> None:
        super().__init__()
        self.settings = settings.named("corral-tui")
        self.monitor_url = monitor_url
        self.store = Store()
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self._feeds: dict[str, Worker] = {}
        self._bots_watch: KVWatch | None = None  #: the bots feed, made once connected
        self._dead_loaded = (0.0, -1)  #: (when, DLQ message count) of the last dead-letter load
        self._varz_at = 0.0
        self._features = FeaturesReader()
        self._features_read = 0.0  #: monotonic time the last features read was started
        self._fleet_again = False  #: the fleet bucket was written during a fleet read: read it once more

    # -- lifecycle ------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._connect()
        self.set_interval(CLOCK_INTERVAL, self._clock)

    async def on_unmount(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            with anyio.move_on_after(2, shield=True):
                await self.nc.close()

    @work(group="connect", exit_on_error=False)
    async def _connect(self) -> None:
        async def lost() -> None:
            self.post_message(ConnectionChanged(False, "connection lost"))

        async def back() -> None:
            self.post_message(ConnectionChanged(True, "reconnected"))

        # core.log types its stream as TextIO; this one has the write() that Logger calls
        log = Logger("tui", stream=cast(TextIO, _TextualLogStream(self)))
        nc = await connect(self.settings, log, wait=True, on_disconnect=lost, on_reconnect=back)
        self.nc, self.js = nc, nc.jetstream(timeout=JS_TIMEOUT)
        self._bots_watch = feeds.watch_bots(self.js, self.post_message, log)

        async def fleet_written(_msg) -> None:
            self.post_message(FleetWritten())

        # A core subscription: the client re-makes it after every reconnect by itself.
        await nc.subscribe(fleet_key_subject(">"), cb=fleet_written)
        self.post_message(ConnectionChanged(True, "connected"))

    def _connected(self) -> tuple[NATS, JetStreamContext]:
        """The connection, for an action about to use it.

        Raises:
            ConnectionError: not connected (the action's worker fails with this, and the operator reads it).
        """
        nc, js = self.nc, self.js
        if js is None or nc is None or not nc.is_connected:
            raise ConnectionError("not connected to NATS: try again when the banner is green")
        return nc, js

    def _connected_js(self) -> JetStreamContext:
        return self._connected()[1]

    # -- the feeds, supervised on a clock -------------------------------------------------------

    def _clock(self) -> None:
        """Once a second: a snapshot, and restart any feed that is not running."""
        self.store.prune()
        nc, js = self.nc, self.js
        if nc is None or js is None:
            return
        self._ensure("snapshot", lambda: self._run_feed("snapshot", feeds.take_snapshot(js, self.post_message)))
        if not self.store.connected:
            return
        if (bots := self._bots_watch) is not None:
            self._ensure("bots", lambda: self._run_feed("bots", bots.run()))
        self._ensure("events", lambda: self._run_feed("events", feeds.tail_events(nc, js, self.post_message)))
        self._ensure("logs", lambda: self._run_feed("logs", feeds.tail_logs(nc, js, self.post_message)))
        self._maybe_reload_dead()
        if self.current_mode in ("fleet", "bots"):  # the bots screen asks which bots a supervisor owns
            self.refresh_fleet()
        if self.current_mode == "features":
            self.refresh_features()
        now = anyio.current_time()
        if (url := self.monitor_url) and now - self._varz_at >= VARZ_INTERVAL:
            self._varz_at = now
            self._ensure("varz", lambda: self._read_varz(url))

    def _ensure(self, name: str, start: Callable[[], Worker]) -> None:
        worker = self._feeds.get(name)
        if worker is None or worker.is_finished:
            self._feeds[name] = start()

    def _run_feed(self, name: str, coro) -> Worker:
        return self.run_worker(coro, name=name, group="feeds", exit_on_error=False)

    def refresh_fleet(self, written: bool = False) -> None:
        """Read the fleet's hosts now, unless a read is already running (the clock calls this every
        second while the Fleet screen is shown). ``written``: the fleet bucket changed, so a read
        already running may have missed it and is followed by one more."""
        js = self.js
        if js is None or not self.store.connected:
            return
        if written and (worker := self._feeds.get("fleet")) is not None and not worker.is_finished:
            self._fleet_again = True
        self._ensure("fleet", lambda: self._run_feed("fleet", self._read_fleet(js)))

    async def _read_fleet(self, js: JetStreamContext) -> None:
        while True:
            self._fleet_again = False
            await feeds.load_fleet(js, self.post_message)
            if not self._fleet_again:
                return

    def refresh_features(self, force: bool = False) -> None:
        """Read schedules, groups and locks, at most every FEATURES_INTERVAL unless ``force`` (the clock
        calls this while the Features screen is shown; a read already running is never doubled)."""
        js, now = self.js, anyio.current_time()
        if js is None or not self.store.connected or (not force and now - self._features_read < FEATURES_INTERVAL):
            return
        worker = self._feeds.get("features")
        if worker is None or worker.is_finished:
            self._features_read = now
            self._feeds["features"] = self._run_feed("features", feeds.load_features(js, self._features, self.post_message))

    def _maybe_reload_dead(self, force: bool = False) -> None:
        js = self.js
        if js is None:  # an action that failed for want of a connection asks too: there is nothing to read yet
            return
        dlq = next((s.messages for s in self.store.snapshot.streams if s.name == "CORRAL_DLQ"), 0) if self.store.snapshot else 0
        when, count = self._dead_loaded
        now = anyio.current_time()
        if force or dlq != count or now - when >= DEAD_RELOAD:
            self._dead_loaded = (now, dlq)
            self._ensure("dead", lambda: self._run_feed("dead", feeds.load_dead(js, self.post_message)))

    @work(thread=True, name="varz", group="feeds", exit_on_error=False)
    def _read_varz(self, url: str) -> None:
        self.post_message(ServerStats(feeds.read_varz(url)))

    # -- feed messages -> store -------------------------------------------------------------

    @on(ConnectionChanged)
    def _connection(self, msg: ConnectionChanged) -> None:
        was = self.store.connected
        self.store.connected, self.store.connection_detail = msg.up, msg.detail
        if msg.up and not was:
            # A KV watch may never notice the reconnect by itself: start it over. The events
            # and logs tails start over too, so that their read-back covers what was missed
            # while away (the store drops what it already holds).
            if self._bots_watch is not None:
                self._bots_watch.restart()
            for tail in ("events", "logs"):
                if (worker := self._feeds.get(tail)) is not None:
                    worker.cancel()
            self._clock()

    @on(SnapshotTaken)
    def _snapshot(self, msg: SnapshotTaken) -> None:
        self.store.take_snapshot(msg.snapshot, msg.at)

    @on(BotBeat)
    def _beat(self, msg: BotBeat) -> None:
        self.store.beat(msg.beat)

    @on(BotGone)
    def _gone(self, msg: BotGone) -> None:
        self.store.gone(msg.name, msg.operation)

    @on(EventArrived)
    def _event(self, msg: EventArrived) -> None:
        self.store.add_event(msg.subject, msg.event)

    @on(LogArrived)
    def _log_line(self, msg: LogArrived) -> None:
        self.store.add_log(msg.line)

    @on(DeadLettersLoaded)
    def _dead(self, msg: DeadLettersLoaded) -> None:
        self.store.set_dead(msg.letters)

    @on(FleetLoaded)
    def _fleet(self, msg: FleetLoaded) -> None:
        self.store.set_fleet(msg.rows, msg.at, msg.slots)
        if self.current_mode in ("fleet", "bots") and isinstance(screen := self.screen, TaskScreen) and screen.is_attached:
            screen.redraw()  # not at the next tick: a fleet read is asked for because something changed

    @on(FleetWritten)
    def _fleet_written(self, _msg: FleetWritten) -> None:
        if self.current_mode in ("fleet", "bots"):
            self.refresh_fleet(written=True)

    @on(FeaturesLoaded)
    def _features_loaded(self, msg: FeaturesLoaded) -> None:
        self.store.set_features(msg.features, msg.at)

    @on(ServerStats)
    def _varz(self, msg: ServerStats) -> None:
        self.store.varz = msg.varz

    @on(Worker.StateChanged)
    def worker_state(self, event: Worker.StateChanged) -> None:
        """The one place worker errors land: feeds mark the server as not answering, actions say what failed."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        reason = str(error) or type(error).__name__
        if event.worker.group == "feeds" or event.worker.group == "connect":
            self.log.warning(f"feed {event.worker.name} ended: {reason}")
            if event.worker.name == "snapshot":
                self.store.snapshot_error = reason
            elif event.worker.name == "fleet":
                self.store.fleet_error = reason
            elif event.worker.name == "features":
                self.store.features_error = reason
            elif event.worker.name == "logs":
                self.store.logs_error = f"log tail: {reason}"
            return
        title = getattr(error, "title", None) or f"{event.worker.name or 'action'} failed"
        self.notify(reason, title=title, severity="error", timeout=8)
