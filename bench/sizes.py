"""How big a run is: ``tiny`` for CI (seconds per scenario), ``full`` for docs/performance.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Size:
    """Counts are messages or jobs; times are seconds."""

    name: str
    #: limit: raw messages published and drained per repetition (and the throughput baseline).
    messages: int
    #: limit and latency: single messages or jobs timed one at a time.
    latency_samples: int
    #: throughput and footprint: `sum` jobs drained per bot count.
    jobs: int
    #: throughput: how many bots drain the backlog, one run each.
    bot_counts: tuple[int, ...]
    #: submit: jobs per method (populate, submit_many, raw publish).
    submit_jobs: int
    #: recovery: the job consumer's ack deadline (None keeps streams/'s shipped value).
    ack_wait: float | None
    #: recovery: the bots' liveness TTL.
    ttl: float
    #: recovery: how long the victim's `sleep` job runs.
    job_seconds: float
    #: dashboard: pending jobs (consumer paused) and idle bots the TUI shows while its RSS is sampled.
    dash_jobs: int = 0
    dash_bots: int = 0
    #: dashboard: seconds the headless TUI spends visiting its screens.
    dash_seconds: float = 20.0
    #: ledger: `sum` jobs 4 fleet-supervised bots drain while the ledger ingests.
    ledger_jobs: int = 0
    #: ledger: results the ledger holds when the canned reports are timed (synthetic ones top it up).
    report_results: int = 0
    #: fairness: tenant A's flood, then tenant B's jobs, drained by ``fair_bots`` bots.
    fair_a: int = 0
    fair_b: int = 0
    fair_bots: int = 4

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


TINY = Size("tiny", messages=500, latency_samples=20, jobs=100, bot_counts=(1, 2), submit_jobs=300,
            ack_wait=1.0, ttl=1.0, job_seconds=0.2,
            dash_jobs=500, dash_bots=3, dash_seconds=3.0, ledger_jobs=200, report_results=2_000,
            fair_a=400, fair_b=40, fair_bots=2)
#: Shipped deadlines (ack_wait 10 s, TTL 10 s); counts kept moderate for a shared 2-core box.
FULL = Size("full", messages=20_000, latency_samples=200, jobs=5_000, bot_counts=(1, 2, 4, 8), submit_jobs=20_000,
            ack_wait=None, ttl=10.0, job_seconds=0.5,
            dash_jobs=100_000, dash_bots=100, dash_seconds=20.0, ledger_jobs=20_000, report_results=1_000_000,
            fair_a=20_000, fair_b=1_000, fair_bots=4)

SIZES = {s.name: s for s in (TINY, FULL)}
