"""The ledger's tables, declared once: the DDL, the batched inserts and docs/analytics.md come from here.

Every time is a naive ``TIMESTAMP`` in UTC (the bundled DuckDB has no ICU, so no
time zones) and every duration is a ``DOUBLE`` in seconds. Primary keys are
what makes ingest idempotent: a redelivered batch hits ``INSERT OR IGNORE``
and records nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.names import job_events_subject

#: Bumped when a table changes shape. A file at a version listed in :data:`UPGRADES` is brought
#: forward in place; any other older one is refused with a hint to rebuild.
SCHEMA_VERSION = 2
#: version -> the statements that bring a file at that version to the next one.
UPGRADES: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE results ADD COLUMN IF NOT EXISTS trace_id VARCHAR",
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS trace_id VARCHAR"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  #: DuckDB type
    doc: str


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ",\n  ".join(f"{c.name} {c.type}" for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols},\n  PRIMARY KEY ({', '.join(self.key)})\n)"

    def insert_sql(self, verb: str = "INSERT OR IGNORE") -> str:
        """A bulk insert taking one list parameter per column (``$1`` … ``$n``), zipped by ``unnest``.

        Timestamps travel as Unix microseconds (ints) and become TIMESTAMPs here,
        so Python never builds a datetime per row. One statement per batch is
        about 50x faster than ``executemany`` in DuckDB.
        """
        exprs = [
            f"make_timestamp(unnest(${i}))" if c.type == "TIMESTAMP" else f"unnest(${i})"
            for i, c in enumerate(self.columns, 1)
        ]
        return f"{verb} INTO {self.name} ({', '.join(self.names)}) SELECT {', '.join(exprs)}"


def _c(name: str, type_: str, doc: str) -> Column:
    return Column(name, type_, doc)


JOBS = Table(
    "jobs",
    "One row per job the ledger has seen, from the job embedded in its result or the original bytes of its dead letter.",
    (
        _c("job_id", "VARCHAR NOT NULL", "the job id"),
        _c("kind", "VARCHAR", "handler kind"),
        _c("queue", "VARCHAR", "queue name"),
        _c("priority", "VARCHAR", "high / normal / low"),
        _c("created_at", "TIMESTAMP", "when the submitter built the job"),
        _c("timeout_s", "DOUBLE", "handler timeout, seconds"),
        _c("max_attempts", "INTEGER", "attempts allowed before dead-lettering"),
        _c("idempotency_key", "VARCHAR", "submitter's dedupe key, if any"),
        _c("correlation_id", "VARCHAR", "submitter's correlation id, if any"),
        _c("args", "JSON", "the job's arguments"),
        _c("schema_v", "INTEGER", "wire schema version the job was written with"),
    ),
    ("job_id",),
)

RESULTS = Table(
    "results",
    "One row per recorded result (CORRAL_RESULTS holds at most one per job: the result fence).",
    (
        _c("job_id", "VARCHAR NOT NULL", "the job id"),
        _c("seq", "BIGINT NOT NULL", "CORRAL_RESULTS stream sequence"),
        _c("stream_ts", "TIMESTAMP", "when the stream stored the result"),
        _c("kind", "VARCHAR", "handler kind"),
        _c("queue", "VARCHAR", "queue name"),
        _c("bot", "VARCHAR", "bot that ran the successful attempt"),
        _c("incarnation", "VARCHAR", "that bot process's incarnation id"),
        _c("attempt", "INTEGER", "which delivery succeeded (1 = first try)"),
        _c("started_at", "TIMESTAMP", "handler start"),
        _c("finished_at", "TIMESTAMP", "handler end"),
        _c("duration_s", "DOUBLE", "finished_at - started_at, seconds"),
        _c("value", "JSON", "what the handler returned"),
        _c("trace_id", "VARCHAR", "W3C trace id the job ran under, if it was submitted with one"),
    ),
    ("job_id",),
)

EVENTS = Table(
    "events",
    "The audit trail, one row per CORRAL_EVENTS message: job lifecycle, bot state and operator actions.",
    (
        _c("seq", "BIGINT NOT NULL", "CORRAL_EVENTS stream sequence"),
        _c("stream_ts", "TIMESTAMP", "when the stream stored the event"),
        _c("subject", "VARCHAR", job_events_subject("<id>") + " / .bot.<name> / .ops.<action>"),
        _c("type", "VARCHAR", "started, succeeded, failed, dead, duplicate, handed_back, throttled, replayed, purged, bot_state, operator"),
        _c("ts", "TIMESTAMP", "when the publisher says it happened"),
        _c("job_id", "VARCHAR", "job events only"),
        _c("bot", "VARCHAR", "bot name"),
        _c("incarnation", "VARCHAR", "bot process incarnation"),
        _c("attempt", "INTEGER", "attempt number: the delivery number less the deliveries a limit throttled"),
        _c("kind", "VARCHAR", "job kind"),
        _c("queue", "VARCHAR", "queue name"),
        _c("correlation_id", "VARCHAR", "job correlation id"),
        _c("state", "VARCHAR", "bot_state events: the new state"),
        _c("detail", "VARCHAR", "error text, retry delay, transition, summary"),
        _c("actor", "VARCHAR", "operator events: user@host"),
        _c("duration_s", "DOUBLE", "succeeded events: handler duration, seconds"),
        _c("trace_id", "VARCHAR", "job events: the W3C trace id of the attempt, if any"),
    ),
    ("seq",),
)

DEAD_LETTERS = Table(
    "dead_letters",
    "One row per CORRAL_DLQ message. Replayed and purged letters stay here after they leave the stream.",
    (
        _c("seq", "BIGINT NOT NULL", "CORRAL_DLQ stream sequence"),
        _c("stream_ts", "TIMESTAMP", "when the stream stored the dead letter"),
        _c("subject", "VARCHAR", "corral.dlq.<queue>.<job_id>"),
        _c("job_id", "VARCHAR", "Corral-Job-Id (invalid-<seq> for undecodable payloads)"),
        _c("queue", "VARCHAR", "Corral-Queue"),
        _c("kind", "VARCHAR", "decoded from the body; NULL when the body is not a job"),
        _c("reason", "VARCHAR", "Corral-Reason"),
        _c("attempts", "INTEGER", "Corral-Attempts"),
        _c("bots", "VARCHAR", "Corral-Bots, comma-separated"),
        _c("dead_at", "TIMESTAMP", "Corral-Dead-At"),
        _c("source_subject", "VARCHAR", "jobs subject it came from"),
        _c("source_seq", "BIGINT", "CORRAL_JOBS sequence it had"),
        _c("data", "BLOB", "the original job bytes, untouched"),
    ),
    ("seq",),
)

BOTS = Table(
    "bots",
    "One row per bot incarnation, derived from its bot_state events (recomputed in the same transaction).",
    (
        _c("bot", "VARCHAR NOT NULL", "bot name"),
        _c("incarnation", "VARCHAR NOT NULL", "process incarnation ('' if unknown)"),
        _c("first_seen", "TIMESTAMP", "first bot_state event"),
        _c("last_seen", "TIMESTAMP", "latest bot_state event"),
        _c("state", "VARCHAR", "state after the latest transition"),
        _c("transitions", "INTEGER", "bot_state events recorded"),
        _c("last_seq", "BIGINT", "events stream sequence of the latest transition"),
    ),
    ("bot", "incarnation"),
)

META = Table(
    "ledger_meta",
    "Facts about the file itself: schema version, and `until` for a time-travel snapshot.",
    (_c("key", "VARCHAR NOT NULL", "name"), _c("value", "VARCHAR", "value")),
    ("key",),
)

TABLES = (JOBS, RESULTS, EVENTS, DEAD_LETTERS, BOTS, META)

#: Recompute the bots rows of the bots named in ``$1`` from their events (idempotent, order-free).
REFRESH_BOTS = """
INSERT OR REPLACE INTO bots
SELECT bot, coalesce(incarnation, ''), min(ts), max(ts), arg_max(state, seq), count(*)::INTEGER, max(seq)
FROM events
WHERE type = 'bot_state' AND bot IN (SELECT unnest($1))
GROUP BY bot, coalesce(incarnation, '')
"""

#: A convenience view: each job with its outcome, attempts and failures.
JOB_OUTCOMES = """
CREATE OR REPLACE VIEW job_outcomes AS
SELECT j.job_id, j.kind, j.queue, j.created_at,
       CASE WHEN r.job_id IS NOT NULL THEN 'succeeded' WHEN d.job_id IS NOT NULL THEN 'dead' ELSE 'unknown' END AS outcome,
       r.bot, r.attempt, r.duration_s, r.finished_at, d.reason AS dead_reason,
       coalesce(f.failures, 0) AS failures
FROM jobs j
LEFT JOIN results r USING (job_id)
LEFT JOIN (SELECT job_id, arg_max(reason, seq) AS reason FROM dead_letters GROUP BY job_id) d USING (job_id)
LEFT JOIN (SELECT job_id, count(*) AS failures FROM events WHERE type = 'failed' GROUP BY job_id) f USING (job_id)
"""

#: The audit trail as every report reads it: ``events``, plus the ``started`` and ``succeeded`` each
#: result implies (core/timeline.py: a first delivery's success writes neither event). A derived
#: row is left out when a bot with ``--full-events`` recorded that event itself, so nothing counts
#: twice. A view rather than rows written at ingest: results and events arrive on separate
#: consumers in any order, and a view needs no second write per job and cannot drift.
TIMELINE = f"""
CREATE OR REPLACE VIEW timeline AS
SELECT 'event' AS source, seq, stream_ts, subject, type, ts, job_id, bot, incarnation, attempt, kind, queue,
       correlation_id, state, detail, actor, duration_s
FROM events
UNION ALL
SELECT 'result', r.seq, r.stream_ts, '{job_events_subject("")}' || r.job_id, t.type,
       CASE t.type WHEN 'started' THEN r.started_at ELSE r.finished_at END,
       r.job_id, r.bot, r.incarnation, r.attempt, r.kind, r.queue, j.correlation_id, NULL, NULL, NULL,
       CASE t.type WHEN 'succeeded' THEN r.duration_s END
FROM results r
CROSS JOIN (VALUES ('started'), ('succeeded')) t(type)
LEFT JOIN jobs j USING (job_id)
WHERE NOT EXISTS (
    SELECT 1 FROM events e
    WHERE e.job_id = r.job_id AND e.type = t.type AND e.attempt = r.attempt
      AND e.incarnation IS NOT DISTINCT FROM r.incarnation)
"""

#: Views, created after the tables on every open (``CREATE OR REPLACE``: a new corral updates them).
VIEWS = (JOB_OUTCOMES, TIMELINE)
