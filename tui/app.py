"""The corral dashboard: a Textual app with one screen (mode) per operator task.

Data flow: long-lived feed workers (``tui/feeds.py``) read NATS and post
:mod:`corral.tui.messages`; the app folds them into one :class:`corral.tui.store.Store`;
screens redraw from the store on a clock tick. Operator actions (drain, replay,
purge, pause, submit, scale, cancel a job, add or remove a schedule) run as app workers too,
so no NATS call ever blocks the UI, and every worker error lands in
:meth:`CorralApp.worker_state`.

The dashboard outlives the server: the client reconnects forever
(``corral.core.connect``), the banner says when the server is unreachable, and the
clock restarts any feed that ended; the bots feed's KV watch is restarted on every
reconnect (docs/nats-notes.md#kv-watches-across-reconnects).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, TextIO, cast

import anyio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from corral.core.bulk import Frozen, run_cancel, run_dead
from corral.core.cancel import request_cancel
from corral.core.connect import connect
from corral.core.control import actor as default_actor
from corral.core.control import drain_bot, pause_queue, record, resume_queue
from corral.core.dlq import DeadLetter, purge, replay
from corral.core.fleet import write_desired
from corral.core.log import Logger
from corral.core.schedules import add_schedule, remove_schedule
from corral.core.settings import Settings
from corral.core.submit import submit_many
from corral.core.watch import KVWatch
from corral.tui import feeds
from corral.tui.features import FeaturesReader
from corral.tui.messages import (
    BotBeat, BotGone, ConnectionChanged, DeadLettersLoaded, EventArrived, FeaturesLoaded, FleetLoaded, ServerStats,
    LogArrived, SnapshotTaken,
)
from corral.tui.screens.analytics import AnalyticsScreen
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.bots import BotsScreen
from corral.tui.screens.confirm import ALT, ConfirmScreen
from corral.tui.screens.dead_letters import DeadLettersScreen
from corral.tui.screens.events import EventsScreen
from corral.tui.screens.features import FeaturesScreen
from corral.tui.screens.fleet import FleetScreen
from corral.tui.screens.help import HelpScreen
from corral.tui.keys import binding_commands, help_sections
from corral.tui.screens.jobs import JobsScreen
from corral.tui.screens.logs import LogsScreen
from corral.tui.screens.overview import OverviewScreen
from corral.tui.screens.schedule_form import ScheduleRequest
from corral.tui.screens.submit import SubmitRequest, SubmitScreen
from corral.tui.store import Store

CLOCK_INTERVAL = 1.0  #: seconds between snapshots (and feed health checks)
DEAD_RELOAD = 10.0  #: seconds between dead-letter reloads when the DLQ count did not change
VARZ_INTERVAL = 5.0  #: seconds between reads of the monitoring endpoint
FEATURES_INTERVAL = 2.0  #: seconds between reads of schedules, groups and locks while the Features screen is shown
JS_TIMEOUT = 2.0  #: seconds a JetStream API request may take before the server counts as not answering

SCREENS: Mapping[str, type[TaskScreen]] = {
    "overview": OverviewScreen,
    "bots": BotsScreen,
    "jobs": JobsScreen,
    "dead": DeadLettersScreen,
    "events": EventsScreen,
    "fleet": FleetScreen,
    "analytics": AnalyticsScreen,
    "features": FeaturesScreen,
    "logs": LogsScreen,
}


class _TextualLogStream(io.TextIOBase):
    """corral.core.log writes to a stream; on a full-screen terminal that stream must not be stderr."""

    def __init__(self, app: App) -> None:
        self.app = app

    def write(self, s: str) -> int:
        self.app.log.info(s.rstrip())
        return len(s)


class CorralApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "corral"
    #: Below 36 rows (an 80x24 terminal) the overview compacts so the consumers table stays visible.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = dict(SCREENS)
    DEFAULT_MODE = "overview"
    BINDINGS = [
        # The footer shows one "1-8 Screens" entry (the ? screen lists each): eight would push Quit off an 80-column footer.
        Binding("1", "switch_mode('overview')", "Screens", key_display="1-9"),
        Binding("1", "switch_mode('overview')", "Overview", show=False),
        Binding("2", "switch_mode('bots')", "Bots", show=False),
        Binding("3", "switch_mode('jobs')", "Jobs", show=False),
        Binding("4", "switch_mode('dead')", "Dead letters", show=False),
        Binding("5", "switch_mode('events')", "Events", show=False),
        Binding("6", "switch_mode('fleet')", "Fleet", show=False),
        Binding("7", "switch_mode('analytics')", "Analytics", show=False),
        Binding("8", "switch_mode('features')", "Features", show=False),
        Binding("9", "switch_mode('logs')", "Logs", show=False),
        Binding("s", "submit", "Submit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, settings: Settings, monitor_url: str | None = None, *, actor: str | None = None) -> None:
        super().__init__()
        self.settings = settings.named("corral-tui")
        self.monitor_url = monitor_url
        self.actor = actor or default_actor(settings)
        self.store = Store()
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self._feeds: dict[str, Worker] = {}
        self._bots_watch: KVWatch | None = None  #: the bots feed, made once connected
        self._dead_loaded = (0.0, -1)  #: (when, DLQ message count) of the last dead-letter load
        self._varz_at = 0.0
        self._scale_lock = asyncio.Lock()  #: scale writes land in key-press order
        self._features = FeaturesReader()
        self._features_read = 0.0  #: monotonic time the last features read was started

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
        self.post_message(ConnectionChanged(True, "connected"))

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

    def refresh_fleet(self) -> None:
        """Read the fleet's hosts now, unless a read is already running (the clock calls this every
        second while the Fleet screen is shown)."""
        js = self.js
        if js is not None and self.store.connected:
            self._ensure("fleet", lambda: self._run_feed("fleet", feeds.load_fleet(js, self.post_message)))

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

    # -- operator actions ---------------------------------------------------------------------

    def confirm_then(self, question: str, then: Callable[[], object], *, yes: str = "Yes", no: str = "Cancel",
                     alt: tuple[str, Callable[[], object]] | None = None) -> None:
        """Ask first; run ``then`` only on yes (or ``alt``'s callable when its answer is picked)."""
        def answered(ok: bool | str | None) -> None:
            if ok == ALT and alt is not None:
                alt[1]()
            elif ok is True:
                then()
        self.push_screen(ConfirmScreen(question, yes=yes, no=no, alt=alt[0] if alt else None), answered)

    def _connected(self) -> tuple[NATS, JetStreamContext]:
        nc, js = self.nc, self.js
        if js is None or nc is None or not nc.is_connected:
            raise ConnectionError("not connected to NATS: try again when the banner is green")
        return nc, js

    def _connected_js(self) -> JetStreamContext:
        return self._connected()[1]

    @work(name="drain", group="actions", exit_on_error=False)
    async def drain_bot(self, bot: str) -> None:
        nc, _ = self._connected()
        reply = await drain_bot(nc, bot, self.actor)
        self.notify(f"{bot} is draining (was {reply.get('state', '?')})", title="drain")

    @work(name="pause", group="actions", exit_on_error=False)
    async def pause_queue(self, queue: str, priority: str) -> None:
        nc, _ = self._connected()
        await pause_queue(nc, queue, self.actor, priority)
        self.notify(f"queue {queue}/{priority} paused", title="pause")

    @work(name="resume", group="actions", exit_on_error=False)
    async def resume_queue(self, queue: str, priority: str) -> None:
        nc, _ = self._connected()
        await resume_queue(nc, queue, self.actor, priority)
        self.notify(f"queue {queue}/{priority} resumed", title="resume")

    @work(name="cancel", group="actions", exit_on_error=False)
    async def cancel_job(self, job_id: str) -> None:
        """Ask every bot to cancel a job (``corral cancel``; ``request_cancel`` records it as this operator)."""
        nc, _ = self._connected()
        await request_cancel(nc, job_id, self.actor)
        self.notify(f"job {job_id}: cancel requested, the bots act on it within a second", title="cancel")

    def scale_host(self, host: str, count: int) -> None:
        """Set ``desired.<host>`` in a worker; that host's supervisor starts or drains bots to match.

        The store shows ``count`` at once, so a second key press builds on this one.
        """
        self.store.scale_sent(host, count)
        self._write_scale(host, count)

    @work(name="scale", group="actions", exit_on_error=False)
    async def _write_scale(self, host: str, count: int) -> None:
        ok = False
        try:
            async with self._scale_lock:
                nc, js = self._connected()
                await write_desired(js, host, count, self.actor)
                ok = True
        finally:
            self.store.scale_done(host, count, ok)
        await record(nc, "scale", self.actor, f"scale {host} to {count}")
        self.notify(f"{host}: desired {count} bot(s)", title="scale")

    def _dlq_progress(self, total: int) -> Callable[[int], None]:
        screen = self.screen

        def progress(done: int) -> None:
            if isinstance(screen, DeadLettersScreen) and screen.is_attached:
                screen.progress(done, total)
        return progress

    @work(name="replay", group="actions", exit_on_error=False)
    async def replay_dead(self, letters: list[DeadLetter]) -> None:
        progress = self._dlq_progress(len(letters))
        try:
            n = await replay(self._connected_js(), letters, actor=self.actor, progress=progress)
        finally:
            progress(len(letters))
            self._maybe_reload_dead(force=True)
        self.notify(f"replayed {n} dead letter(s)", title="replay")

    @work(name="purge", group="actions", exit_on_error=False)
    async def purge_dead(self, letters: list[DeadLetter]) -> None:
        progress = self._dlq_progress(len(letters))
        try:
            n = await purge(self._connected_js(), letters, actor=self.actor, progress=progress)
        finally:
            progress(len(letters))
            self._maybe_reload_dead(force=True)
        self.notify(f"purged {n} dead letter(s)", title="purge")

    @work(name="bulk", group="actions", exit_on_error=False)
    async def bulk_dead(self, frozen: Frozen) -> None:
        """Replay or purge exactly the previewed dead letters, audited as this operator."""
        progress = self._dlq_progress(frozen.count)
        try:
            n = await run_dead(self._connected_js(), frozen, actor=self.actor, progress=progress)
        finally:
            progress(frozen.count)
            self._maybe_reload_dead(force=True)
        self.notify(f"{frozen.done_verb} {n} of {frozen.count} dead letter(s)", title=frozen.action)

    @work(name="bulk_cancel", group="actions", exit_on_error=False)
    async def bulk_cancel(self, frozen: Frozen) -> None:
        """Ask every bot to cancel exactly the previewed jobs, audited as this operator."""
        nc, _ = self._connected()
        n = await run_cancel(nc, frozen, actor=self.actor)
        self.notify(f"cancel requested for {n} job(s), the bots act on it within a second", title="cancel")

    @work(name="submit", group="actions", exit_on_error=False)
    async def submit_jobs(self, req: SubmitRequest, form: SubmitScreen) -> None:
        js = self._connected_js()
        jobs = req.jobs()
        summary = await submit_many(js, jobs, progress=lambda done: form.progress(done, req.count))
        text = f"accepted {summary.accepted}" + (f" ({summary.duplicates} duplicates)" if summary.duplicates else "")
        if summary.refused:
            text += f", refused {len(summary.refused)}: {summary.refused[0][2]}"
        if req.count == 1 and summary.accepted:
            text += f"  ·  job {jobs[0].id}"
        form.status(text, error=bool(summary.refused))
        self.notify(text, title="submit", severity="error" if summary.refused else "information")

    @work(name="schedule", group="actions", exit_on_error=False)
    async def add_schedule(self, req: ScheduleRequest) -> None:
        """Create or replace a schedule (``corral schedule add``), recorded as this operator."""
        nc, _ = self._connected()
        s = await add_schedule(nc, req.name, req.job, req.spec, self.actor)
        self.refresh_features(force=True)
        self.notify(f"schedule {s.name}: {req.job.kind} {s.spec}", title="schedule added")

    @work(name="unschedule", group="actions", exit_on_error=False)
    async def remove_schedule(self, name: str) -> None:
        """Remove a schedule (``corral schedule rm``), recorded as this operator."""
        nc, _ = self._connected()
        await remove_schedule(nc, name, self.actor)
        self.refresh_features(force=True)
        self.notify(f"schedule {name} removed", title="schedule removed")

    def action_submit(self) -> None:
        self.push_screen(SubmitScreen())

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self.BINDINGS, SCREENS)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from binding_commands(self, screen)


def run_dashboard(settings: Settings, monitor_url: str | None = None) -> None:
    """Run the dashboard until the operator quits (blocking)."""
    CorralApp(settings, monitor_url).run()
