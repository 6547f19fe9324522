"""What the dashboard knows, held in memory: the one place screens read from.

Feed workers post messages; the app applies them here. Everything is capped
(events, history, dead letters) so a long-running dashboard stays small.
Times are Unix seconds.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.core.dlq import DeadLetter
from corral.core.fleet import HostStatus
from corral.core.logship import LogLine
from corral.core.messages import TERMINAL_EVENTS, BotHeartbeat, CurrentJob, Event, EventType
from corral.core.names import DLQ_STREAM, is_job_events_subject
from corral.core.status import Snapshot
from corral.tui.features import Features

MAX_EVENTS = 500  #: events kept for the tail and the jobs list
MAX_LOGS = 2000  #: log lines kept for the Logs screen
GONE_LINGER = 8.0  #: seconds a dead or stopped bot stays visible before it drops off
REPLACED_LINGER = 120.0  #: seconds a replaced incarnation (its name taken by a new process) stays visible
RATE_WINDOW = 180  #: seconds of per-second throughput kept for the sparklines
STALE_SNAPSHOT = 3.5  #: seconds without a successful snapshot before the server counts as unreachable
SHARE_WINDOW = 60.0  #: seconds of work the bots screen's "1m" and "share" columns cover
RATE_TYPES = (EventType.SUCCEEDED, EventType.FAILED, EventType.DEAD)


@dataclass
class BotRow:
    """A bot as the table shows it: its last heartbeat, and whether its key is gone."""

    beat: BotHeartbeat
    gone_at: float | None = None
    gone_why: str = ""  #: "expired" (TTL, the bot died), "stopped" (deregistered) or "replaced" (see ``beat``)


def _dedupe_key(subject: str, event: Event) -> tuple:
    """What makes an event the same one twice (the read-back and the live tail overlap).

    A ``started`` or ``succeeded`` comes either as an event or derived from the result
    (core/timeline.py; a bot with ``--full-events`` writes both): one per attempt and incarnation.
    """
    if event.type in (EventType.STARTED, EventType.SUCCEEDED):
        return (subject, event.type, event.attempt, event.incarnation)
    return (subject, event.ts, event.type, event.attempt, event.bot, event.detail)


@dataclass(frozen=True)
class EventRow:
    n: int  #: local arrival number, increasing
    subject: str
    event: Event


@dataclass
class JobRow:
    """A job's latest event, for the recent jobs list."""

    job_id: str
    kind: str
    queue: str
    last: str
    attempt: int
    bot: str
    ts: float


@dataclass
class Store:
    clock: Callable[[], float] = time.time
    connected: bool = False
    connection_detail: str = "connecting"
    snapshot: Snapshot | None = None
    snapshot_at: float = 0.0
    snapshot_error: str = ""
    bots: dict[str, BotRow] = field(default_factory=dict)
    events: deque[EventRow] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    events_seen: int = 0
    jobs: dict[str, JobRow] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    dead_version: int = 0
    dlq_history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=120))
    varz: dict | None = None
    fleet: list[HostStatus] = field(default_factory=list)
    fleet_at: float = 0.0  #: when the last fleet read was started (0: never)
    fleet_error: str = ""
    fleet_slots: dict = field(default_factory=dict)  #: host -> list of SlotStatus, from its supervisor's heartbeat
    features: Features = field(default_factory=Features)  #: schedules, groups, locks (the Features screen)
    features_at: float = 0.0  #: when the last features read was started (0: never)
    features_error: str = ""
    #: host -> (count, written at) for scales this dashboard sent; the count is shown until a fleet
    #: read started after the write landed (``inf`` while it is in flight), so fast key presses add up.
    _scaled: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: bot name -> (heartbeat_at, done) of its current incarnation, for its share of recent work
    _done_samples: dict[str, deque] = field(default_factory=dict)
    logs: deque = field(default_factory=lambda: deque(maxlen=MAX_LOGS))  #: (arrival number, LogLine)
    logs_seen: int = 0
    logs_error: str = ""
    _counts: Counter = field(default_factory=Counter)
    _keys: set = field(default_factory=set)
    _key_order: deque = field(default_factory=lambda: deque(maxlen=4 * MAX_EVENTS))
    _log_keys: set = field(default_factory=set)
    _log_key_order: deque = field(default_factory=lambda: deque(maxlen=2 * MAX_LOGS))

    # -- applying feeds ---------------------------------------------------------------

    def take_snapshot(self, snap: Snapshot, at: float) -> None:
        self.snapshot, self.snapshot_at, self.snapshot_error = snap, at, ""
        dlq = next((s.messages for s in snap.streams if s.name == DLQ_STREAM), 0)
        self.dlq_history.append((at, dlq))
        live = {b.name for b in snap.bots}
        for name, row in self.bots.items():
            # The watch can lag after a reconnect (docs/nats-notes.md#kv-watches-across-reconnects); the snapshot reads the
            # bucket directly, so a key it no longer holds is gone even if no marker arrived.
            if row.gone_at is None and name not in live and row.beat.heartbeat_at < at - 2:
                row.gone_at, row.gone_why = at, "expired"

    def beat(self, hb: BotHeartbeat) -> None:
        old = self.bots.get(hb.name)
        if old is not None and old.beat.incarnation != hb.incarnation and old.gone_why != "stopped":
            # A new process under the same name (a supervisor restarting a slot) means the old one
            # died, often before its key expired: keep its row, as dead, under ``name@pid``.
            self.bots[f"{hb.name}@{old.beat.pid}"] = BotRow(old.beat, old.gone_at or self.clock(), "replaced")
            self._done_samples.pop(hb.name, None)  # a new process counts from 0
        self.bots[hb.name] = BotRow(hb)
        samples = self._done_samples.setdefault(hb.name, deque())
        samples.append((hb.heartbeat_at, hb.done))
        while samples and samples[0][0] < hb.heartbeat_at - 2 * SHARE_WINDOW:
            samples.popleft()

    def gone(self, name: str, operation: str) -> None:
        row = self.bots.get(name)
        if row is not None and row.gone_at is None:
            row.gone_at = self.clock()
            row.gone_why = "stopped" if operation == "DEL" else "expired"

    def prune(self) -> None:
        now = self.clock()
        linger = lambda r: REPLACED_LINGER if r.gone_why == "replaced" else GONE_LINGER  # noqa: E731
        for name in [n for n, r in self.bots.items() if r.gone_at and now - r.gone_at > linger(r)]:
            del self.bots[name]

    def add_event(self, subject: str, event: Event) -> bool:
        """Record an event once (the read-back at start and the live tail overlap)."""
        key = _dedupe_key(subject, event)
        if key in self._keys:
            return False
        if len(self._key_order) == self._key_order.maxlen:
            self._keys.discard(self._key_order[0])
        self._key_order.append(key)
        self._keys.add(key)
        self.events_seen += 1
        self.events.append(EventRow(self.events_seen, subject, event))
        if event.type in RATE_TYPES:
            self._counts[(int(event.ts), event.type)] += 1
        if event.job_id and is_job_events_subject(subject):
            self._track_job(event.job_id, event)
        return True

    def _track_job(self, job_id: str, e: Event) -> None:
        old = self.jobs.pop(job_id, None)
        # An older event read back after a newer live one; or a progress report the bot flushed
        # just after the job ended (it flushes them every half second), which would hide the end.
        if old and (old.ts > e.ts or (e.type == EventType.PROGRESS and old.last in TERMINAL_EVENTS)):
            self.jobs[job_id] = old
            return
        self.jobs[job_id] = JobRow(
            job_id, e.kind or (old.kind if old else ""), e.queue or (old.queue if old else ""),
            str(e.type), e.attempt or (old.attempt if old else 0), e.bot or e.actor or "", e.ts,
        )
        while len(self.jobs) > MAX_EVENTS:
            del self.jobs[next(iter(self.jobs))]

    def add_log(self, line: LogLine) -> bool:
        """Record a line once: the tail's read-back (at start and after a reconnect) overlaps the live lines."""
        key = (line.subject, json.dumps(line.record, sort_keys=True, default=str))
        if key in self._log_keys:
            return False
        if len(self._log_key_order) == self._log_key_order.maxlen:
            self._log_keys.discard(self._log_key_order[0])
        self._log_key_order.append(key)
        self._log_keys.add(key)
        self.logs_seen += 1
        self.logs.append((self.logs_seen, line))
        return True

    def bot_log_lines(self, bot: str, limit: int = 50) -> list[LogLine]:
        """A bot's (or ``fleet-<host>``'s) newest lines this dashboard holds, oldest first (a bot's describe view);
        :func:`corral.core.logship.recent_lines` reads older ones from the stream."""
        return [line for _, line in self.logs if line.process == bot][-limit:]

    def set_dead(self, letters: list[DeadLetter]) -> None:
        if [d.seq for d in letters] != [d.seq for d in self.dead]:
            self.dead_version += 1
        self.dead = letters

    def set_fleet(self, rows: list[HostStatus], started_at: float, slots: dict | None = None) -> None:
        self.fleet, self.fleet_at, self.fleet_error = rows, started_at, ""
        self.fleet_slots = slots or {}
        self._bury_replaced()
        for host in [h for h, (_, at) in self._scaled.items() if at < started_at]:
            del self._scaled[host]

    def _bury_replaced(self) -> None:
        """A slot whose supervisor saw its process die holds a dead incarnation: show it dead at once, not
        only when the replacement's first heartbeat arrives (a new bot process takes a second or two to start)."""
        for slot in (s for slots in self.fleet_slots.values() for s in slots):
            row = self.bots.get(slot.name)
            if (row is None or row.gone_at is not None or not slot.last_exit_at or row.beat.pid == slot.pid
                    or row.beat.started_at > slot.last_exit_at):
                continue
            self.bots[f"{slot.name}@{row.beat.pid}"] = BotRow(row.beat, slot.last_exit_at, "replaced")
            del self.bots[slot.name]

    def set_features(self, features: Features, started_at: float) -> None:
        self.features, self.features_at, self.features_error = features, started_at, ""

    def scale_sent(self, host: str, count: int) -> None:
        self._scaled[host] = (count, float("inf"))

    def scale_done(self, host: str, count: int, ok: bool) -> None:
        """A scale write landed (or failed); a later key press on the same host keeps its own entry."""
        if self._scaled.get(host, (None,))[0] != count:
            return
        if ok:
            self._scaled[host] = (count, self.clock())
        else:
            del self._scaled[host]

    def desired(self, row: HostStatus) -> int | None:
        """The host's desired count as the operator last set it here, else as last read."""
        scaled = self._scaled.get(row.host)
        return scaled[0] if scaled else row.desired

    # -- derived views ------------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self.connected and self.clock() - self.snapshot_at < STALE_SNAPSHOT

    def recent_done(self, name: str, window: float = SHARE_WINDOW) -> int:
        """Jobs the bot finished in the last ``window`` seconds, from the ``done`` counter of its heartbeats."""
        samples = self._done_samples.get(name)
        if not samples:
            return 0
        cutoff = samples[-1][0] - window
        before = [done for at, done in samples if at <= cutoff]
        # the last count from before the window; a bot seen for less than the window counts from its first beat
        return samples[-1][1] - (before[-1] if before else samples[0][1])

    def work_shares(self, window: float = SHARE_WINDOW) -> dict[str, tuple[int, float]]:
        """Live bot name -> (jobs done in the window, share of all live bots' total in %)."""
        done = {name: self.recent_done(name, window) for name, row in self.bots.items() if row.gone_at is None}
        total = sum(done.values())
        return {name: (n, 100.0 * n / total if total else 0.0) for name, n in done.items()}

    def rate_series(self, etype: EventType, seconds: int = 120) -> list[int]:
        now = int(self.clock())
        for key in [k for k in self._counts if k[0] < now - RATE_WINDOW]:
            del self._counts[key]
        return [self._counts.get((t, etype), 0) for t in range(now - seconds, now)]

    def rate(self, etype: EventType, seconds: int = 10) -> float:
        return sum(self.rate_series(etype, seconds)) / seconds

    def alerts(self) -> list[str]:
        """Conditions an operator should act on, most urgent first."""
        out = []
        if not self.reachable:
            out.append(f"NATS server unreachable ({self.connection_detail if not self.connected else self.snapshot_error or 'no answer'})")
        snap = self.snapshot
        if snap is None:
            return out
        pending = sum(c.pending for c in snap.consumers)
        live = [r for r in self.bots.values() if r.gone_at is None]
        if pending and not live and not snap.bots:
            out.append(f"no live bots while {pending} jobs are pending")
        for c in snap.consumers:
            if c.max_ack_pending and c.in_flight >= c.max_ack_pending:
                out.append(f"{c.name}: in flight {c.in_flight} reached max_ack_pending {c.max_ack_pending}")
            if c.paused:
                out.append(f"{c.name} is paused")
        if self.dlq_growing():
            out.append(f"dead letters growing: {self.dlq_history[-1][1]} in {DLQ_STREAM}")
        for s in snap.streams:
            if not s.present:
                out.append(f"stream {s.name} missing: run `corral provision`")
        return out

    def dlq_growing(self, window: float = 60.0) -> bool:
        if len(self.dlq_history) < 2:
            return False
        now_t, now_n = self.dlq_history[-1]
        past = [n for t, n in self.dlq_history if t >= now_t - window]
        return now_n > min(past)

    def in_flight(self) -> list[tuple[str, CurrentJob]]:
        """(bot, job) for every job a live bot reports running, with the progress its handler last reported."""
        return [(r.beat.name, c) for r in self.bots.values() if r.gone_at is None for c in r.beat.current]
