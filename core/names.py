"""Every stream, consumer, bucket and subject name corral uses, in one place.

The layout (docs/resources.md has the table and the `nats` commands):

    corral.jobs.<queue>.<priority>          CORRAL_JOBS     work queue, one consumer per queue+priority
    corral.fair.<queue>.<priority>.<key>    CORRAL_FAIR     jobs with a fairness key, waiting for the dispatcher
    corral.results.<job_id>.<bot>           CORRAL_RESULTS  a job's one result, named by its writer; fenced across the job
    corral.results.<job_id>                 CORRAL_RESULTS  the previous layout's results, read until they age out
    corral.events.job.<job_id>              CORRAL_EVENTS   a job's lifecycle, read back by `corral job`
    corral.events.bot.<bot>                 CORRAL_EVENTS   bot state transitions
    corral.events.ops.<action>              CORRAL_EVENTS   operator actions (drain, pause, resume, replay, purge, ...)
    corral.dlq.<queue>.<job_id>             CORRAL_DLQ      dead letters: original bytes + reason headers
    corral.logs.<host>.<process>            CORRAL_LOGS     bot and supervisor log lines, info and above (an hour)
    $KV.corral_bots.<bot>                   KV_corral_bots  bot liveness, one key per bot name, per-key TTL
    corral.control.bot.<bot>                (core NATS)     request/reply: {"action": "drain"} stops a bot gracefully
    corral.schedules.defs.<name>            CORRAL_SCHEDULES a server message schedule (the job is its body)
    corral.schedules.fire.<queue>.<prio>    CORRAL_SCHEDULES its firings; CORRAL_JOBS sources them onto corral.jobs.<queue>.<prio>
    corral.schedules.debounce.<key>         CORRAL_SCHEDULES the newest job for a debounce key, fired when its window ends
    $KV.corral_cancel.<job_id>              KV_corral_cancel cancellation requests, watched by every bot
    $KV.corral_unique.<sha256(key)>         KV_corral_unique unique-job keys, held while the job is pending or running
    $KV.corral_limits.def.<kind>            KV_corral_limits a kind's fleet-wide limits (concurrency cap, rate)
    $KV.corral_limits.slot.<kind>.<i>       KV_corral_limits concurrency slot i, leased (TTL) while a job of the kind runs
    $KV.corral_limits.rate.<kind>.<window>  KV_corral_limits starts counted in one fixed rate window (TTL 2 windows)
    $KV.corral_fleet.desired.<host>         KV_corral_fleet  how many bots a fleet host should run
    $KV.corral_fleet.supervisor.<host>      KV_corral_fleet  a fleet supervisor's liveness (per-key TTL)

Job ids and bot names become subject tokens, so they are restricted to
``[A-Za-z0-9_-]`` (see :func:`check_token`): no dots, wildcards or spaces can
reach a subject. A name made from a host name (which may hold dots) goes through
:func:`subject_token` first, the one place such a name is mapped.
"""

from __future__ import annotations

import re

from corral.core.errors import InvalidJobError

def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject of one key of a KV bucket (``>`` for every key)."""
    return f"$KV.{bucket}.{key}"


JOBS_STREAM = "CORRAL_JOBS"
RESULTS_STREAM = "CORRAL_RESULTS"
EVENTS_STREAM = "CORRAL_EVENTS"
DLQ_STREAM = "CORRAL_DLQ"
LOGS_STREAM = "CORRAL_LOGS"
LOGS_SUBJECT = "corral.logs.>"  #: every process's log lines
BOTS_BUCKET = "corral_bots"
BOTS_STREAM = kv_stream(BOTS_BUCKET)

DEFAULT_QUEUE = "default"
PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_token(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one subject token.

    Raises:
        InvalidJobError: the value is empty, longer than 128 characters, or
            holds anything but letters, digits, ``_`` and ``-``.
    """
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidJobError(
            f"{what} {value!r} is not usable: use 1-128 characters from A-Z a-z 0-9 _ -"
        )
    return value


JOBS_SUBJECT = "corral.jobs.>"  #: every queue and priority of the jobs stream


def job_subject(queue: str, priority: str = DEFAULT_PRIORITY) -> str:
    return f"corral.jobs.{queue}.{priority}"


def parse_job_subject(subject: str) -> tuple[str, str] | None:
    """(queue, priority) of a ``corral.jobs.<queue>.<priority>`` subject, or None for any other subject.

    The subject a job was delivered on is the truth for both: it chose the consumer, so it chose
    the job's place in line, whatever the payload's own fields say.
    """
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["corral", "jobs"] or parts[3] not in PRIORITIES or not _TOKEN.fullmatch(parts[2]):
        return None
    return parts[2], parts[3]


FAIR_STREAM = "CORRAL_FAIR"
FAIR_PREFIX = "corral.fair."
FAIR_SUBJECT = f"{FAIR_PREFIX}>"  #: every queue, priority and key of the fair stream


def fair_subject(queue: str, priority: str, key: str) -> str:
    """Where a job with fairness key ``key`` waits until the dispatcher moves it to ``job_subject``."""
    return f"{FAIR_PREFIX}{queue}.{priority}.{key}"


def parse_fair_subject(subject: str) -> tuple[str, str, str] | None:
    """(queue, priority, key) of a ``corral.fair.<queue>.<priority>.<key>`` subject, or None."""
    parts = subject.split(".")
    if (len(parts) != 5 or parts[:2] != ["corral", "fair"] or parts[3] not in PRIORITIES
            or not _TOKEN.fullmatch(parts[2]) or not _TOKEN.fullmatch(parts[4])):
        return None
    return parts[2], parts[3], parts[4]


def consumer_name(queue: str, priority: str = DEFAULT_PRIORITY) -> str:
    """The durable pull consumer the bots share for one queue and priority."""
    return f"work-{queue}-{priority}"


RESULTS_PREFIX = "corral.results."
RESULTS_SUBJECT = f"{RESULTS_PREFIX}>"  #: every result, both layouts
#: The stream's subjects: per-bot results, and the previous layout's (one token) until they age out.
RESULTS_STREAM_SUBJECTS = (f"{RESULTS_PREFIX}*.*", f"{RESULTS_PREFIX}*")

#: Headers of a fenced result publish: stored only if no subject under the job's prefix has a
#: message yet, whichever bot wrote it (docs/nats-notes.md, "Compare-and-set on a subject").
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"

#: An atomic batch's headers (docs/nats-notes.md, "Atomic batch publish"); the server stores them
#: with each message, so a replay of stored messages (a restore) must leave them out.
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
BATCH_HEADERS = (BATCH_ID, BATCH_SEQUENCE, BATCH_COMMIT)


def result_subject(job_id: str, bot: str) -> str:
    """Where ``bot`` records the result of ``job_id``: ``corral.results.<job_id>.<bot>``."""
    return f"{RESULTS_PREFIX}{job_id}.{bot}"


def job_results_subject(job_id: str) -> str:
    """Every per-bot result subject of one job (at most one holds a message: the fence)."""
    return f"{RESULTS_PREFIX}{job_id}.*"


def legacy_result_subject(job_id: str) -> str:
    """The previous layout's result subject, ``corral.results.<job_id>``: read, never written."""
    return f"{RESULTS_PREFIX}{job_id}"


def bot_results_subject(bot: str) -> str:
    """Every result one bot may write (its permission in the secured profile)."""
    return f"{RESULTS_PREFIX}*.{bot}"


def result_fence(job_id: str) -> dict[str, str]:
    """The headers that admit the first result of ``job_id`` and refuse every later one (err 10071)."""
    return {EXPECTED_LAST_SUBJECT_SEQ: "0", EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: job_results_subject(job_id)}


def parse_result_subject(subject: str) -> tuple[str, str | None] | None:
    """(job id, bot) of a result subject; the bot is None for the previous layout; None if not a result."""
    parts = subject.split(".")
    if parts[:2] != ["corral", "results"] or len(parts) not in (3, 4) or not all(_TOKEN.fullmatch(p) for p in parts[2:]):
        return None
    return parts[2], (parts[3] if len(parts) == 4 else None)


def is_result_subject(subject: str) -> bool:
    """True for a result subject of either layout (the one-result-per-job fence)."""
    return subject.startswith(RESULTS_PREFIX)


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")


def subject_token(raw: str) -> str:
    """``raw`` (a host name, say ``web.example.com``) as one subject token: ``web-example-com``.

    Every character outside ``[A-Za-z0-9_-]`` becomes ``-`` and the result is cut to 128, so a
    bot named after its host can write ``corral.results.<job>.<bot>``. Names given explicitly
    (``--name``) are checked, not mapped (:func:`check_token`), so an operator sees a mistake.
    """
    token = _NOT_TOKEN.sub("-", raw).strip("-")[:128]
    return token or "bot"


EVENTS_PREFIX = "corral.events."
EVENTS_SUBJECT = f"{EVENTS_PREFIX}>"  #: every event: jobs, bots and operators
JOB_EVENTS_PREFIX = f"{EVENTS_PREFIX}job."


def job_events_subject(job_id: str) -> str:
    return f"{JOB_EVENTS_PREFIX}{job_id}"


def is_job_events_subject(subject: str) -> bool:
    """True for ``corral.events.job.<job_id>`` (not a bot's or an operator's event)."""
    return subject.startswith(JOB_EVENTS_PREFIX)


def bot_events_subject(bot: str) -> str:
    return f"corral.events.bot.{bot}"


def ops_events_subject(action: str) -> str:
    return f"corral.events.ops.{action}"


DLQ_SUBJECT = "corral.dlq.>"  #: every dead letter


def dlq_subject(queue: str, job_id: str) -> str:
    return f"corral.dlq.{queue}.{job_id}"


def dlq_queue_subject(queue: str | None) -> str:
    """The dead letters of one queue (every queue's for None)."""
    return f"corral.dlq.{queue}.>" if queue else DLQ_SUBJECT


def dlq_job_subject(job_id: str) -> str:
    """The dead letters of one job, whatever its queue (a job that died twice has two)."""
    return f"corral.dlq.*.{job_id}"


def control_subject(bot: str) -> str:
    """Core-NATS request subject a bot answers for remote control (``{"action": "drain"}``)."""
    return f"corral.control.bot.{bot}"


SCHEDULES_STREAM = "CORRAL_SCHEDULES"


def schedule_subject(name: str) -> str:
    """Where a schedule's definition lives (server schedules must fire into their own stream)."""
    return f"corral.schedules.defs.{name}"


DEBOUNCE_PREFIX = "corral.schedules.debounce."


def debounce_subject(key: str) -> str:
    """Where the newest job of debounce key ``key`` waits (one message: a newer one rolls it up)."""
    return f"{DEBOUNCE_PREFIX}{key}"


FIRING_PREFIX = "corral.schedules.fire."


def firing_subject(queue: str, priority: str = DEFAULT_PRIORITY) -> str:
    """Where a schedule fires; CORRAL_JOBS sources these as ``corral.jobs.<queue>.<priority>``."""
    return f"{FIRING_PREFIX}{queue}.{priority}"


CANCEL_BUCKET = "corral_cancel"
UNIQUE_BUCKET = "corral_unique"
LIMITS_BUCKET = "corral_limits"
GROUPS_BUCKET = "corral_groups"
LOCKS_BUCKET = "corral_locks"


def cancel_key_subject(job_id: str) -> str:
    return kv_subject(CANCEL_BUCKET, job_id)


def unique_key_subject(digest: str) -> str:
    return kv_subject(UNIQUE_BUCKET, digest)


def bot_key_subject(bot: str) -> str:
    return kv_subject(BOTS_BUCKET, bot)


def api_subject(op: str) -> str:
    """The JetStream API subject of one request, e.g. ``STREAM.INFO.CORRAL_JOBS``."""
    return f"$JS.API.{op}"


def stream_op(verb: str, stream: str) -> str:
    """A stream request for :func:`api_subject`: ``stream_op("INFO", "CORRAL_JOBS")`` is ``STREAM.INFO.CORRAL_JOBS``."""
    return f"STREAM.{verb}.{stream}"


def consumer_op(verb: str, stream: str, name: str | None = None) -> str:
    """A consumer request for :func:`api_subject`: ``CONSUMER.<verb>.<stream>[.<name>]``."""
    return f"CONSUMER.{verb}.{stream}" + (f".{name}" if name else "")


FLEET_BUCKET = "corral_fleet"
FLEET_STREAM = kv_stream(FLEET_BUCKET)
FLEET_EVENTS_ACTION = "fleet"  #: supervisors report restarts and crash loops on corral.events.ops.fleet


def fleet_key_subject(key: str) -> str:
    """``$KV.corral_fleet.<key>``; ``key`` is ``desired.<host>`` or ``supervisor.<host>`` (``>`` for all)."""
    return kv_subject(FLEET_BUCKET, key)


#: Subject of the server's advisory when a job consumer exhausts max_deliver.
MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.*"


# -- the ledger ------------------------------------------------------------------------------
# The ledger never consumes CORRAL_JOBS: it is a work queue, so a message vanishes on
# ack and a second consumer overlapping the bots' filter is refused (``10100 filtered
# consumer not unique on workqueue stream``). Jobs reach the ledger through the results
# (each carries its Job), the events and the dead letters (original job bytes).

#: The ledger's durable pull consumer per stream; declared in streams/consumer-ledger-*.json.
LEDGER_CONSUMERS = {
    RESULTS_STREAM: "ledger-results",
    EVENTS_STREAM: "ledger-events",
    DLQ_STREAM: "ledger-dlq",
}

#: The subject filter covering each whole stream the ledger reads (its rebuild consumers use it).
STREAM_SUBJECTS = {
    RESULTS_STREAM: RESULTS_SUBJECT,
    EVENTS_STREAM: EVENTS_SUBJECT,
    DLQ_STREAM: DLQ_SUBJECT,
}

LEDGER_SERVICE_NAME = "corral-ledger"  #: the ledger's micro service (``nats micro ls``)
LEDGER_SERVICE_VERSION = "1.0.0"
LEDGER_QUERY_SUBJECT = "corral.ledger.query"  #: request/reply: a SQL query for the ledger


def log_subject(host: str, process: str) -> str:
    """Where one process publishes its log lines: ``corral.logs.<host>.<process>`` (a bot's name, ``fleet-<host>``).

    The host is the machine's hostname with anything but ``[A-Za-z0-9_-]`` turned into ``-``, so a dotted
    hostname stays one token.
    """
    return f"corral.logs.{re.sub(r'[^A-Za-z0-9_-]', '-', host)[:128] or 'unknown'}.{check_token(process, 'process name')}"


def process_log_subject(process: str) -> str:
    """Every host's lines of one process (a bot's recent lines, wherever it ran)."""
    return f"corral.logs.*.{check_token(process, 'process name')}"
