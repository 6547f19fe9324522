"""The wire vocabulary: every payload that crosses a process boundary.

Encoding is JSON (msgspec), so `nats stream view` shows readable jobs. Encoders
and decoders are built once here and reused.

Schema evolution (a rolling upgrade runs old and new bots side by side): every
field added after v1 gets a default, no field is ever removed or retyped, and
decoders ignore unknown fields (msgspec's default). ``v`` records the schema a
payload was written with, for the day a change cannot follow those rules. Jobs,
results and heartbeats write every field, defaults included, so a stored job
keeps the values it was submitted with even if a default changes later.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any

import msgspec

from corral.core.errors import InvalidJobError
from corral.core.names import DEFAULT_PRIORITY, DEFAULT_QUEUE, PRIORITIES, check_token

SCHEMA_VERSION = 1


def new_id() -> str:
    """A job or incarnation id: 32 hex characters, time-free, safe as a subject token."""
    return uuid.uuid4().hex


class Singleton(msgspec.Struct, kw_only=True):
    """A job's singleton key: at most one job with ``key`` runs at a time, fleet-wide."""

    key: str
    #: While another job holds the key: ``queue`` (wait behind it) or ``drop`` (end, not run).
    busy: str = "queue"

    def validate(self) -> Singleton:
        check_token(self.key, "singleton key")
        if self.busy not in ("queue", "drop"):
            raise InvalidJobError(f"singleton busy {self.busy!r} must be queue or drop")
        return self


class Job(msgspec.Struct, kw_only=True):
    """One unit of work. Times are Unix seconds; ``timeout`` is in seconds."""

    #: The handler to run (a bot serves the kinds it registered).
    kind: str
    #: Required on a submitted job; steps nested in ``then``/``compensate`` get theirs when they run.
    id: str = ""
    #: The handler's keyword arguments.
    args: dict[str, Any] = {}
    #: Should match the ``<queue>`` of the subject it is published on (the subject decides).
    queue: str = DEFAULT_QUEUE
    #: ``high``, ``normal`` or ``low``; should match the subject's ``<priority>`` (the subject decides).
    priority: str = DEFAULT_PRIORITY
    #: Unix seconds when it was submitted.
    created_at: float = 0.0
    #: Seconds one attempt may run before it is failed.
    timeout: float = 60.0
    #: Attempts before the job is dead-lettered (1-100).
    max_attempts: int = 3
    #: Sent as ``Nats-Msg-Id`` instead of the id: a second job with the same key is one job.
    idempotency_key: str | None = None
    #: Free text copied onto the job's events and result, to tie related jobs together.
    correlation_id: str | None = None
    #: Unix seconds after which the job is dropped (recorded as ``expired``), not run.
    expires_at: float | None = None
    #: While a job with this key is pending or running, another with the same key is refused.
    unique_key: str | None = None
    #: At most one job with this key runs at a time, fleet-wide (core/singleton.py).
    singleton: Singleton | None = None
    #: The tenant the job is fair to: it waits on its key's subject of CORRAL_FAIR and starts in turn with other keys.
    fairness_key: str | None = None
    #: Jobs to submit when this one succeeds, each receiving ``args["previous"]`` = this result.
    then: list[Job] = []
    #: Saga: the job that undoes this step, run if a later step of the chain dies.
    compensate: Job | None = None
    #: Saga: undo jobs of the steps completed before this one, most recent first (filled by bots).
    compensations: list[Job] = []
    #: Fan-in (core/groups.py): the group this job belongs to, its size, and the callback.
    group: str | None = None
    group_size: int = 0
    on_complete: Job | None = None
    #: The schema version the payload was written with.
    v: int = SCHEMA_VERSION

    def validate(self, nested: bool = False) -> Job:
        """Return self if every field is usable (``nested``: a step inside another job, id optional).

        Raises:
            InvalidJobError: a field is out of range or unsafe for a subject.
        """
        if self.id or not nested:
            check_token(self.id, "job id")
        check_token(self.queue, "queue")
        if self.unique_key is not None and not 0 < len(self.unique_key) <= 512:
            raise InvalidJobError("unique_key must be 1-512 characters")
        if self.singleton is not None:
            self.singleton.validate()
        if self.fairness_key is not None:
            check_token(self.fairness_key, "fairness key")
        if self.group is not None:
            check_token(self.group, "group id")
            if self.group_size < 1 or self.on_complete is None:
                raise InvalidJobError("a group member needs group_size >= 1 and an on_complete callback")
        for step in (*self.then, *self.compensations, *([self.compensate] if self.compensate else []),
                     *([self.on_complete] if self.on_complete else [])):
            step.validate(nested=True)
        if self.priority not in PRIORITIES:
            raise InvalidJobError(f"priority {self.priority!r} is not one of {', '.join(PRIORITIES)}")
        if not self.kind or len(self.kind) > 200:
            raise InvalidJobError("kind must be 1-200 characters")
        if not 0 < self.timeout <= 86_400:
            raise InvalidJobError(f"timeout {self.timeout} must be in (0, 86400] seconds")
        if not 1 <= self.max_attempts <= 100:
            raise InvalidJobError(f"max_attempts {self.max_attempts} must be 1-100")
        return self

    @property
    def dedupe_id(self) -> str:
        """The Nats-Msg-Id: the idempotency key when given, else the job id."""
        return self.idempotency_key or self.id


def make_job(kind: str, args: dict[str, Any] | None = None, **fields: Any) -> Job:
    """Build a validated job with a fresh id and creation time unless given."""
    fields.setdefault("id", new_id())
    fields.setdefault("created_at", time.time())
    return Job(kind=kind, args=args or {}, **fields).validate()


class Outcome(StrEnum):
    """How a job ended."""

    SUCCEEDED = "succeeded"  #: the handler returned; ``value`` holds what it returned
    DEAD = "dead"  #: moved to the dead-letter stream; see its reason


class JobResult(msgspec.Struct, kw_only=True):
    """The one recorded result of a job, on ``corral.results.<job_id>.<bot>`` (its writer)."""

    job_id: str
    kind: str
    queue: str
    #: The name of the bot that ran it.
    bot: str
    #: That bot process's incarnation id (a restarted bot keeps its name and gets a new incarnation).
    incarnation: str
    #: Which delivery succeeded, from 1.
    attempt: int
    #: Unix seconds when the handler started and returned.
    started_at: float
    finished_at: float
    #: What the handler returned, as JSON.
    value: Any = None
    #: The job as it ran (its id is the delivery's id, e.g. a periodic firing's own).
    job: Job | None = None
    #: The W3C trace id the job was submitted under (from its ``traceparent`` header), if any.
    trace_id: str | None = None
    v: int = SCHEMA_VERSION


class EventType(StrEnum):
    """Lifecycle events on the events stream (the audit trail)."""

    STARTED = "started"  #: a bot took a delivery and began the handler
    SUCCEEDED = "succeeded"  #: result recorded, job acked
    FAILED = "failed"  #: the handler raised or timed out; a retry follows
    DEAD = "dead"  #: moved to the dead-letter stream
    DUPLICATE = "duplicate"  #: redelivered but its result was already recorded; acked, not re-run
    HANDED_BACK = "handed_back"  #: a draining bot gave the job back unfinished
    REPLAYED = "replayed"  #: an operator put a dead letter back on the jobs stream
    EXPIRED = "expired"  #: past its expires_at when delivered; dropped, not run
    CANCELLED = "cancelled"  #: cancelled by an operator (before it ran, or while running)
    PROGRESS = "progress"  #: the handler reported progress (``detail``: percent and message)
    CHAINED = "chained"  #: the job's ``then`` steps were submitted (``detail``: their ids)
    FAN_IN = "fan_in"  #: the last member of a group finished; the group's callback was submitted
    COMPENSATING = "compensating"  #: the job died; its saga's compensations were submitted (``detail``: the first id)
    DEBOUNCED = "debounced"  #: submitted with a debounce key: waits for its window to end (``detail``: key, fire time)
    DROPPED = "dropped"  #: a singleton job (``singleton_busy: drop``) found its key held by a running job: not run
    SUPERSEDED = "superseded"  #: a newer job with the same debounce key replaced it inside the window: not run
    THROTTLED = "throttled"  #: over its kind's limits (core/limits.py): nak'd with a delay, not run, not an attempt
    PURGED = "purged"  #: an operator purged dead letters
    BOT_STATE = "bot_state"  #: a bot changed state
    OPERATOR = "operator"  #: any other operator action


#: Event types after which a job does nothing more: `corral job --follow` stops, the dashboard
#: offers no cancel. A duplicate ends it too (its result was already recorded); a dead job
#: may be replayed, which starts a new life with ``replayed``.
TERMINAL_EVENTS = frozenset({
    EventType.SUCCEEDED, EventType.DEAD, EventType.CANCELLED, EventType.EXPIRED, EventType.DUPLICATE,
    EventType.SUPERSEDED, EventType.DROPPED,
})


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of the audit trail. ``ts`` is Unix seconds.

    Unset fields are omitted to keep the trail compact; so is ``v`` while it is
    1 (an event without ``v`` is version 1).
    """

    #: What happened (see :class:`EventType`).
    type: EventType
    ts: float
    job_id: str | None = None
    #: The bot that reported it (job and bot events).
    bot: str | None = None
    incarnation: str | None = None
    #: The delivery the event is about, from 1.
    attempt: int | None = None
    kind: str | None = None
    queue: str | None = None
    correlation_id: str | None = None
    #: The bot's new state (``bot_state`` events).
    state: str | None = None
    #: Free text: the error of a failure, the reason of a death, an operator action's target.
    detail: str | None = None
    #: Who did it, as ``user@host`` (operator events).
    actor: str | None = None
    #: Seconds the handler ran (``succeeded`` events).
    duration: float | None = None
    #: The attempt's W3C trace id and, when a tracer is configured, its span id (core/tracing.py).
    trace_id: str | None = None
    span_id: str | None = None
    #: On ``started``: the job had its bot to itself (a suspect's run), so a death is its own.
    isolated: bool = False
    v: int = SCHEMA_VERSION


class CurrentJob(msgspec.Struct, kw_only=True):
    """A job a bot is running now. ``since`` is Unix seconds."""

    id: str
    kind: str
    since: float
    progress: float | None = None  #: percent, when the handler reports it
    message: str | None = None


class BotHeartbeat(msgspec.Struct, kw_only=True):
    """A bot's liveness entry, the value of ``$KV.corral_bots.<name>``."""

    name: str  #: the bot name, the same as its key
    incarnation: str  #: this process's id; a restart under the same name gets a new one
    host: str  #: the machine's hostname
    pid: int
    state: str  #: ``ready``, ``processing``, ``shutting_down``, ... (bots/state.py)
    version: str  #: the corral version the bot runs
    started_at: float  #: Unix seconds
    heartbeat_at: float  #: Unix seconds of this write
    queues: list[str] = []
    concurrency: int = 1  #: jobs it runs at once
    current: list[CurrentJob] = []  #: the jobs running now (at most 20)
    done: int = 0  #: counters since the process started
    failed: int = 0
    dead: int = 0
    #: The kinds this bot serves (its handler registry), so `corral submit` can warn about a kind
    #: nobody serves. Empty from bots older than the field: they are assumed to serve anything.
    kinds: list[str] = []
    #: What the process costs (bots/usage.py), sampled at each write; 0 from bots older than the fields.
    cpu_seconds: float = 0.0  #: user + system CPU time since the process started
    cpu_percent: float = 0.0  #: CPU share of one core since the previous heartbeat
    rss_bytes: int = 0  #: resident memory
    v: int = SCHEMA_VERSION


class DeadLetterHeaders:
    """Headers on a dead letter; its body is the job's original bytes, untouched."""

    REASON = "Corral-Reason"
    ATTEMPTS = "Corral-Attempts"
    BOTS = "Corral-Bots"
    JOB_ID = "Corral-Job-Id"
    QUEUE = "Corral-Queue"
    SOURCE_SUBJECT = "Corral-Source-Subject"
    SOURCE_SEQ = "Corral-Source-Seq"
    DEAD_AT = "Corral-Dead-At"


job_encoder = msgspec.json.Encoder()
job_decoder = msgspec.json.Decoder(Job)
result_decoder = msgspec.json.Decoder(JobResult)
event_decoder = msgspec.json.Decoder(Event)
heartbeat_decoder = msgspec.json.Decoder(BotHeartbeat)
encode = job_encoder.encode


def decode_job(data: bytes) -> Job:
    """Decode and validate a job payload.

    Raises:
        InvalidJobError: the bytes are not a valid job (the message says why).
    """
    try:
        return job_decoder.decode(data).validate()
    except msgspec.DecodeError as e:
        raise InvalidJobError(f"undecodable job payload: {e}") from e
