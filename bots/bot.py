"""The bot daemon: one anyio task group holding the intake, heartbeat, ticker, reaper and signals.

The intake (bots/intake.py) is the pull loop and the workers that run what it claims;
this module starts the bot up, keeps its state, connection and liveness, and shuts it down.

Stop order on SIGTERM/SIGINT (dramatiq's, for the same reasons):

1. stop fetching, so no new job is claimed while we leave;
2. let running jobs finish and ack, up to ``drain_timeout``; hand back (nak)
   what is still running then, so another bot takes it at once instead of
   after the ack deadline (steps 1 and 2: :meth:`Intake.stop` and :meth:`Intake.run`);
3. flush outstanding event publishes, so the audit trail has no holes;
4. delete the liveness key (watchers see the bot leave now, not after its TTL)
   and stop the heartbeat;
5. drain and close the connection. Exit 0.

A second signal skips the wait in step 2.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import anyio
import nats.js.errors

from corral.bots.usage import Usage
from corral.bots.config import BotConfig
from corral.bots.execute import Executor
from corral.bots.feeds import Feed, Feeds
from corral.bots.inflight import InFlightJobs
from corral.bots.intake import FETCH_TIMEOUT, Intake
from corral.bots.liveness import Liveness, NameLostError
from corral.bots.metrics import BotMetrics
from corral.bots.outbox import Outbox
from corral.bots.trail import uncounted
from corral.bots.dispatcher import Dispatcher
from corral.bots.purger import Purger
from corral.bots.reaper import Reaper
from corral.bots.remote import answer_control, watch_cancellations
from corral.bots.state import BotState, StateMachine, Transitions
from corral.bots.trail import log_summary
from corral.core.connect import TRANSIENT, connect, wait_for_resources
from corral.core.errors import CorralError, TransportError
from corral.core.handlers import Registry
from corral.core.log import Logger
from corral.core.logship import ship_logs
from corral.core.messages import BotHeartbeat, new_id
from corral.core.names import (
    BOTS_STREAM, DLQ_STREAM, EVENTS_STREAM, JOBS_STREAM, LIMITS_BUCKET, PRIORITIES, RESULTS_STREAM, consumer_name, kv_stream,
)
from corral.core.publisher import AsyncPublisher
from corral.core.settings import Settings

SUMMARY_EVERY = 1.0  #: seconds between the info lines that count finished jobs (per-job lines are debug)


class Bot:
    def __init__(self, settings: Settings, config: BotConfig, log: Logger, registry: Registry | None = None) -> None:
        self.settings = settings.named(f"corral-bot-{config.name}")
        self.config = config
        self.registry = registry or Registry.build(list(config.handlers))
        self.incarnation = new_id()[:12]
        self.log = log.bind(bot=config.name, inc=self.incarnation)
        self.started_at = time.time()
        self.metrics = BotMetrics(config.name)
        self._consumer_seen = 0.0  #: monotonic time the consumers were last checked (start-up); see Feeds.answered
        self.transitions = Transitions(config.name, self.incarnation)
        self.sm = StateMachine(self._on_transition)
        self.inflight = InFlightJobs()
        self.intake = Intake(config, self.inflight, self.sm, self.log)
        self.exit_code = 0
        self._beat_now = anyio.Event()
        self._connected = anyio.Event()
        self._connected.set()

    # -- state -------------------------------------------------------------------------------

    def _on_transition(self, old: BotState, new: BotState) -> None:
        self.log.info("bot.state", old=old, new=new)
        self.metrics.set_state(new)
        self.transitions.put(old, new)
        self._beat_now.set()

    def heartbeat(self) -> BotHeartbeat:
        ex = getattr(self, "executor", None)
        cpu_s, cpu_pct, rss = self._usage().sample()
        return BotHeartbeat(
            name=self.config.name, incarnation=self.incarnation, host=socket.gethostname(), pid=os.getpid(),
            state=self.sm.state, version=self.config.version, started_at=self.started_at, heartbeat_at=time.time(),
            queues=list(self.config.queues), concurrency=self.config.concurrency,
            current=self.inflight.current(ex.progress if ex else {}),
            done=ex.counters.done if ex else 0, failed=ex.counters.failed if ex else 0, dead=ex.counters.dead if ex else 0,
            kinds=sorted(self.registry.handlers), cpu_seconds=cpu_s, cpu_percent=cpu_pct, rss_bytes=rss,
        )

    def _usage(self) -> Usage:
        if (usage := getattr(self, "_usage_sampler", None)) is None:
            usage = self._usage_sampler = Usage()
        return usage

    def stop(self, force: bool = False) -> None:
        """Begin a graceful drain (``force``: hand running jobs back at once)."""
        self.intake.stop(force)
        if self.sm.can(BotState.SHUTTING_DOWN):
            self.sm.to(BotState.SHUTTING_DOWN)
        self._connected.set()  # wake a pull loop parked on the breaker

    # -- connection and breaker --------------------------------------------------------------

    async def _on_disconnect(self) -> None:
        self._connected = anyio.Event()
        if not self.intake.stopping and self.sm.can(BotState.ERROR):
            self.sm.to(BotState.ERROR)

    async def _on_reconnect(self) -> None:
        self.metrics.reconnects.inc()
        self._connected.set()

    async def _breaker(self) -> None:
        """Closed: return at once. Open: wait for the server, then health-check before claiming again."""
        if self.sm.state != BotState.ERROR or self.intake.stopping:
            return
        self.log.warning("breaker.open", reason="server unreachable; not claiming")
        await self._connected.wait()
        async for attempt in anyio_retry():
            with attempt:
                if self.intake.stopping:
                    return
                if self.sm.state == BotState.ERROR:
                    self.sm.to(BotState.HEALTH_CHECK)
                for consumer in self.consumers:
                    await self.js.consumer_info(JOBS_STREAM, consumer)
                await self._flush_outbox()
        if not self.intake.stopping:
            self.sm.to(BotState.READY)
            if self.inflight:
                self.sm.to(BotState.PROCESSING)
            self.log.info("breaker.closed")

    # -- main --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.nc = await connect(self.settings, self.log, on_disconnect=self._on_disconnect, on_reconnect=self._on_reconnect)
        ship_logs(self.nc, self.log, self.config.name)  # the dashboard's Logs screen (core/logship.py)
        self.js = self.nc.jetstream()
        self.outbox = Outbox(self.config.outbox_dir, self.log) if self.config.outbox_dir else None
        self.publisher = AsyncPublisher(
            self.js, self.log, ack_timeout=self.config.publish_timeout, on_lost=self.outbox.put if self.outbox else None
        )
        # Highest priority first; within a priority, queues in the order given: (consumer, rank).
        self.lanes = [(consumer_name(q, p), PRIORITIES.index(p)) for p in self.config.priorities for q in self.config.queues]
        self.consumers = [consumer for consumer, _ in self.lanes]
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals)
                tg.start_soon(self.publisher.run_expiry)
                tg.start_soon(self.transitions.run, self.publisher)
                await self._start_up()
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._in_progress_loop)
                tg.start_soon(Reaper(self.nc, self.js, self.log, self.config.sweep_interval, self.config.name).run)
                tg.start_soon(Purger(self.nc, self.js, self.log, self.config.name).run)
                tg.start_soon(Dispatcher(self.nc, self.js, self.log, self.config.name).run)
                tg.start_soon(answer_control, self.nc, self.config.name, self.incarnation, self.log, self.stop, lambda: str(self.sm.state))
                tg.start_soon(watch_cancellations, self.js, self.executor.cancel, self.log)
                tg.start_soon(self._settle_ready)
                tg.start_soon(self._flush_progress)
                tg.start_soon(log_summary, self.executor.counters, self.log, lambda: len(self.inflight), SUMMARY_EVERY,
                              lambda: self.executor.recorder.committer.stats)
                await self.intake.run(self.nc, self.feeds, self.executor, self._breaker)
                await self._shut_down()
                tg.cancel_scope.cancel()
        except CorralError as e:
            self.log.error("bot.failed", error=str(e))
            self.exit_code = self.exit_code or 3
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_connection()
        self.log.info("bot.exit", code=self.exit_code)
        return self.exit_code

    async def _start_up(self) -> None:
        await wait_for_resources(
            # The limits bucket too: without it every job would be throttled (limits fail closed).
            self.js, self.log, [JOBS_STREAM, RESULTS_STREAM, EVENTS_STREAM, DLQ_STREAM, BOTS_STREAM, kv_stream(LIMITS_BUCKET)],
            [(JOBS_STREAM, c) for c in self.consumers],
        )
        self._start_up_to(BotState.REGISTERING)
        self.liveness = Liveness(self.js, self.config.name, self.config.liveness_ttl, self.log)
        await self.liveness.claim(self.heartbeat())
        self._start_up_to(BotState.HEALTH_CHECK)
        infos = [await self.js.consumer_info(JOBS_STREAM, c) for c in self.consumers]
        self.ack_wait = min(i.config.ack_wait or 30.0 for i in infos)
        max_deliver = min((i.config.max_deliver for i in infos if i.config.max_deliver and i.config.max_deliver > 0), default=1_000_000)
        # Per-job counts only where an endpoint serves them: counting a job costs a few locks in
        # prometheus-client, about 3 % of a no-op job's CPU, and without --metrics-port nobody reads them.
        count = self.metrics.count if self.config.metrics_port is not None else uncounted
        self.executor = Executor(
            self.js, self.publisher, self.registry, self.config, self.incarnation, self.log,
            on_count=count, gate=self.inflight,
            max_deliver=max_deliver,
            outbox=self.outbox,
        )
        try:
            await self._flush_outbox()  # what a previous incarnation of this name left behind
        except TransportError as e:
            self.log.warning("outbox.flush_deferred", error=str(e))
        self.feeds = Feeds(
            [Feed(self.nc, JOBS_STREAM, consumer, rank, self.log, self._on_arrival) for consumer, rank in self.lanes],
            self.config.fair_every,
        )
        for feed in self.feeds.feeds:
            await feed.start()
        self._consumer_seen = time.monotonic()
        if self.config.metrics_port is not None:
            port = self.metrics.serve(self.config.metrics_port, self.config.metrics_addr, self._readiness)
            self.log.info("bot.metrics", url=f"http://{self.config.metrics_addr}:{port}/metrics")
        self._start_up_to(BotState.READY)
        self.log.info("bot.ready", consumers=",".join(self.consumers), ack_wait=self.ack_wait, concurrency=self.config.concurrency,
                      fair_every=self.config.fair_every)

    def _start_up_to(self, state: BotState) -> None:
        """A start-up step's state, unless a signal already moved the bot to shutting_down: start-up
        then runs on, claims nothing, and leaves the way a drain does (its liveness key deleted)."""
        if self.sm.can(state):
            self.sm.to(state)

    def _on_arrival(self) -> None:
        self.feeds.arrived()

    async def _flush_outbox(self) -> None:
        """Publish what waited on disk while the server was away, before claiming new work.

        Raises:
            TransportError: an entry could not be published yet (the breaker retries).
        """
        if self.outbox is not None:
            await self.outbox.flush_all(self.js)

    def _readiness(self) -> tuple[bool, str]:
        """For /readyz (called from the endpoint's thread; reads only)."""
        if self.intake.stopping:
            return False, "draining"
        if not self.nc.is_connected:
            return False, "not connected to NATS"
        if self.sm.state not in (BotState.READY, BotState.PROCESSING):
            return False, f"state {self.sm.state}"
        seen = max(self._consumer_seen, self.feeds.answered)  # served only once the feeds exist
        age = time.monotonic() - seen if seen else float("inf")
        if age > 3 * FETCH_TIMEOUT + 5:
            return False, f"consumers {', '.join(self.consumers)} last answered {age:.0f}s ago"
        return True, f"state {self.sm.state}, consumers {', '.join(self.consumers)} answering"

    async def _close_connection(self) -> None:
        """Hand back jobs claimed but never started, then drain and close."""
        feeds = getattr(self, "feeds", None)
        if feeds is not None and self.nc.is_connected:
            # Stop our pull requests' inboxes first, then give back what they brought: a late
            # long-poll answer must not sit out its ack deadline in a bot that is leaving.
            for feed in feeds.feeds:
                await feed.stop()
            for msg in feeds.take_all_buffered():
                await msg.nak()
        with anyio.move_on_after(5):
            if self.nc.is_connected:
                await self.nc.drain()
        if not self.nc.is_closed:
            await self.nc.close()

    async def _shut_down(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.publisher.flush(5)
            await self.liveness.release()
            self.sm.to(BotState.STOPPED)
            await self.transitions.publish_queued(self.publisher)
            await self.publisher.flush(5)

    # -- background tasks --------------------------------------------------------------------

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info("bot.signal", signal=signal.Signals(signum).name, force=self.intake.stopping)
                self.stop()

    async def _settle_ready(self, quiet: float = 1.0) -> None:
        """processing -> ready once nothing has run for ``quiet`` seconds.

        Flipping state on every job made each job at light load cost two state events, two
        heartbeat writes and two log lines; the state is for operators, so it is debounced.
        """
        while True:
            await self.inflight.idle.wait()
            self.inflight.reset_idle()
            while self.sm.state == BotState.PROCESSING and not self.inflight:
                remaining = self.inflight.idle_since + quiet - time.monotonic()
                if remaining <= 0:
                    self.sm.to(BotState.READY)
                    break
                await anyio.sleep(remaining)

    async def _flush_progress(self, interval: float = 0.5) -> None:
        """Publish handlers' progress reports as events, at most one per job per interval."""
        while True:
            await anyio.sleep(interval)
            await self.executor.attempts.flush_progress({f.job_id: f.kind for f in self.inflight.values()})

    async def _heartbeat_loop(self) -> None:
        """Refresh the liveness key every ttl/3, and at once after a state change."""
        while not self.intake.stopping:
            with anyio.move_on_after(self.config.heartbeat_interval):
                await self._beat_now.wait()
            self._beat_now = anyio.Event()
            if self.intake.stopping or not self.nc.is_connected:
                continue
            try:
                await self.liveness.beat(self.heartbeat())
            except NameLostError as e:
                self.log.error("bot.name_lost", error=str(e))
                self.exit_code = 4
                self.stop(force=True)
            except (TransportError, nats.js.errors.APIError) as e:
                self.log.warning("heartbeat.failed", error=str(e) or type(e).__name__)

    async def _in_progress_loop(self) -> None:
        """Keep long jobs' ack deadlines alive: +WPI every ack_wait/3 for jobs older than that.

        Also the liveness tick for /healthz and the in-flight and outbox gauges.
        """
        period = max(min(self.ack_wait / 3, 2.0), 0.2)
        while True:
            await anyio.sleep(period)
            now = time.monotonic()  # a job held for less than a period needs no +WPI yet
            self.metrics.last_tick = time.monotonic()
            self.metrics.in_flight.set(len(self.inflight))
            if self.outbox is not None:
                self.metrics.outbox.set(len(self.outbox))
            if self.nc.is_connected:
                # Running jobs, and jobs claimed but waiting for a slot (bots/feeds.py).
                buffered = [(b.msg, b.arrived) for b in self.feeds.buffered()]
                await self.inflight.keep_alive(now - period, buffered, self.log)


def anyio_retry():
    """Retry transient NATS failures with backoff, forever (the breaker's half-open probe)."""
    import stamina

    return stamina.retry_context(on=(*TRANSIENT, nats.js.errors.APIError), attempts=None, timeout=None, wait_max=5.0)
