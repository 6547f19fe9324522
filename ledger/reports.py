"""Canned reports: named SQL over the ledger, run through the query service like any query.

Outcome counts read the ``timeline`` view (ledger/schema.py), never ``events`` alone: a
first delivery's success is recorded only as its result, and the view adds the ``started``
and ``succeeded`` it implies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    sql: str


_OUTCOME_COUNTS = """
    count(*) FILTER (type = 'succeeded') AS succeeded,
    count(*) FILTER (type = 'failed') AS failed_attempts,
    count(*) FILTER (type = 'dead') AS dead,
    round(100.0 * count(*) FILTER (type = 'succeeded') / nullif(count(*) FILTER (type IN ('succeeded', 'dead')), 0), 1) AS success_pct,
    round(100.0 * count(*) FILTER (type = 'failed') / nullif(count(*) FILTER (type IN ('succeeded', 'failed')), 0), 1)
        AS attempt_failure_pct,
    round(100.0 * count(*) FILTER (type = 'dead') / nullif(count(*) FILTER (type IN ('succeeded', 'dead')), 0), 1) AS dead_pct
"""

REPORTS = {
    r.name: r
    for r in (
        Report("operator-actions", "operator actions, newest first (replays, purges, other ops) with who did them", """
            SELECT ts, type, actor, job_id, detail
            FROM events WHERE type IN ('operator', 'replayed', 'purged')
            ORDER BY seq DESC LIMIT 200"""),
        Report("throughput", "job outcomes per minute (UTC)", """
            SELECT date_trunc('minute', ts) AS minute,
                   count(*) FILTER (type = 'succeeded') AS succeeded,
                   count(*) FILTER (type = 'failed') AS failed_attempts,
                   count(*) FILTER (type = 'dead') AS dead
            FROM timeline WHERE type IN ('succeeded', 'failed', 'dead')
            GROUP BY 1 ORDER BY 1"""),
        Report("rates-by-kind", "success, attempt-failure and dead rates per job kind", f"""
            SELECT kind, {_OUTCOME_COUNTS}
            FROM timeline WHERE type IN ('succeeded', 'failed', 'dead') AND kind IS NOT NULL
            GROUP BY kind ORDER BY kind"""),
        Report("rates-by-bot", "success, attempt-failure and dead rates per bot", f"""
            SELECT bot, {_OUTCOME_COUNTS}
            FROM timeline WHERE type IN ('succeeded', 'failed', 'dead') AND bot IS NOT NULL
            GROUP BY bot ORDER BY bot"""),
        Report("durations", "handler duration percentiles per kind, milliseconds (successful attempts)", """
            SELECT kind, count(*) AS jobs,
                   round(1000 * quantile_cont(duration_s, 0.50), 2) AS p50_ms,
                   round(1000 * quantile_cont(duration_s, 0.95), 2) AS p95_ms,
                   round(1000 * quantile_cont(duration_s, 0.99), 2) AS p99_ms,
                   round(1000 * max(duration_s), 2) AS max_ms
            FROM results GROUP BY kind ORDER BY kind"""),
        Report("slowest", "the 20 slowest successful jobs", """
            SELECT job_id, kind, bot, attempt, finished_at, round(1000 * duration_s, 2) AS ms
            FROM results ORDER BY duration_s DESC, job_id LIMIT 20"""),
        Report("retries", "how many attempts jobs needed, per kind", """
            SELECT kind, outcome, failures AS failed_attempts, count(*) AS jobs
            FROM job_outcomes GROUP BY ALL ORDER BY kind, outcome, failed_attempts"""),
        Report("dead-reasons", "why jobs died, most common first", """
            SELECT coalesce(kind, '(invalid payload)') AS kind,
                   regexp_replace(reason, '[0-9a-f]{32}', '<id>', 'g') AS reason, count(*) AS letters
            FROM dead_letters GROUP BY ALL ORDER BY letters DESC, kind LIMIT 50"""),
    )
}
