"""The analytics ledger end to end: real nats-server, real bots, a real DuckDB file, no sleeps."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from corral.core.errors import TransportError
from corral.ledger import QueryError, ask
from corral.core.messages import make_job
from corral.core.names import DLQ_STREAM, EVENTS_STREAM, RESULTS_STREAM
from corral.core.submit import submit_many
from corral.core.spawn import corral_argv
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

TABLES = ("jobs", "results", "events", "dead_letters", "bots")


class LedgerProcess:
    """A real `corral ledger` subprocess with its log captured to a file."""

    def __init__(self, url: str, db: Path, log_dir: Path, *extra: str) -> None:
        self.log_path = log_dir / f"ledger-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            corral_argv("ledger", "--server", url, "--db", str(db), "--linger-ms", "50", *extra),
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the graceful exit."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def ledgers(tmp_path: Path):
    started: list[LedgerProcess] = []

    def start(url: str, db: Path, *extra: str) -> LedgerProcess:
        p = LedgerProcess(url, db, tmp_path, *extra)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(corral_argv(*args, "--server", url), capture_output=True, text=True, timeout=60)


async def count(js, table: str) -> int:
    """Rows in ``table`` per the query service; -1 while no ledger service is up yet."""
    try:
        reply = await ask(js._nc, f"SELECT count(*) FROM {table}", timeout=5)
    except TransportError:
        return -1
    return reply.rows[0][0]


async def caught_up(js) -> bool:
    """Every message the three streams hold is in its table (the ledger is idle and complete)."""
    for stream, table in ((RESULTS_STREAM, "results"), (EVENTS_STREAM, "events"), (DLQ_STREAM, "dead_letters")):
        if (await js.stream_info(stream)).state.messages != await count(js, table):
            return False
    return True


async def run_workload(js, url: str, bots, n_ok: int, n_fail: int) -> list:
    """Submit ``n_ok`` sum jobs and ``n_fail`` always-failing jobs (2 attempts) and wait for every outcome."""
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(n_ok)] + [
        make_job("fail", {"message": "boom"}, max_attempts=2) for _ in range(n_fail)
    ]
    summary = await submit_many(js, jobs)
    assert summary.ok
    return jobs


def table_rows(db: Path, table: str) -> set:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return set(con.execute(f"SELECT * FROM {table}").fetchall())
    finally:
        con.close()


async def test_results_events_and_dead_letters_from_real_bots_appear_in_the_tables(js, provisioned, bots, ledgers, tmp_path):
    """Given a ledger and a bot, when jobs succeed and fail, then every table holds them and queries see them."""
    ledger = ledgers(provisioned.url, tmp_path / "ledger.duckdb")
    bot = bots(provisioned.url, "b1", "--backoff-base", "0.1")
    jobs = await run_workload(js, provisioned.url, bots, n_ok=40, n_fail=2)
    await eventually(lambda: _at_least(js, "dead_letters", 2), timeout=40, what="two dead letters")
    await eventually(lambda: _at_least(js, "results", 40), timeout=40, what="40 results")
    bot.signal(signal.SIGTERM)
    bot.wait()
    await eventually(lambda: caught_up(js), timeout=20, what="the ledger to catch up with the streams")

    reply = await ask(js._nc, "SELECT outcome, count(*) FROM job_outcomes GROUP BY 1 ORDER BY 1")
    assert reply.rows == [["dead", 2], ["succeeded", 40]]
    assert await count(js, "jobs") == len(jobs)
    value = await ask(js._nc, f"SELECT value::INTEGER, bot FROM results WHERE job_id = '{jobs[5].id}'")
    assert value.rows == [[6, "b1"]]
    failed = await ask(js._nc, "SELECT count(*) FROM events WHERE type = 'failed'")
    assert failed.rows == [[4]]
    states = await ask(js._nc, "SELECT bot, state FROM bots")
    assert states.rows == [["b1", "stopped"]]
    assert ledger.stop() == 0
    assert "event=ledger.stopped" in ledger.log()


async def _at_least(js, table: str, n: int) -> bool:
    return await count(js, table) >= n


async def test_a_ledger_killed_between_commit_and_ack_and_restarted_records_every_row_once(js, provisioned, bots, ledgers, tmp_path):
    """Given a ledger that dies right after its first commit (before acking), when it restarts, then each message is one row."""
    db = tmp_path / "ledger.duckdb"
    bots(provisioned.url, "b1")
    await run_workload(js, provisioned.url, bots, n_ok=300, n_fail=0)
    crashed = ledgers(provisioned.url, db, "--crash-after-commits", "2", "--batch", "50")
    assert crashed.proc.wait(60) == 137
    assert "event=ledger.fault_injected" in crashed.log()
    killed = ledgers(provisioned.url, db, "--batch", "50")
    await eventually(lambda: _async(lambda: "event=ledger.batch" in killed.log()), what="a committed batch")
    killed.proc.kill()  # SIGKILL, wherever it is
    killed.proc.wait()
    await run_workload(js, provisioned.url, bots, n_ok=100, n_fail=0)
    ledgers(provisioned.url, db)
    await eventually(lambda: _at_least(js, "results", 400), timeout=60, what="400 results")
    await eventually(lambda: caught_up(js), timeout=30, what="the ledger to catch up")
    for stream, table, key in ((RESULTS_STREAM, "results", "seq"), (EVENTS_STREAM, "events", "seq")):
        reply = await ask(js._nc, f"SELECT count(*), count(DISTINCT {key}), min({key}), max({key}) FROM {table}")
        state = (await js.stream_info(stream)).state
        assert reply.rows == [[state.messages, state.messages, state.first_seq, state.last_seq]]


async def _async(fn):
    return fn()


async def test_a_rebuild_from_the_streams_equals_the_live_tables_and_until_travels_back(js, provisioned, bots, ledgers, tmp_path):
    """Given a live ledger fed by two waves of jobs, then a rebuild equals it, and --until the first wave holds only that."""
    live = tmp_path / "live.duckdb"
    ledger = ledgers(provisioned.url, live)
    bot = bots(provisioned.url, "b1", "--backoff-base", "0.1")
    await run_workload(js, provisioned.url, bots, n_ok=30, n_fail=1)
    await eventually(lambda: _at_least(js, "dead_letters", 1), timeout=40, what="a dead letter")
    await eventually(lambda: _at_least(js, "results", 30), timeout=40, what="first wave")
    await eventually(lambda: caught_up(js), what="the ledger to catch up")
    between = dt.datetime.now(dt.UTC)
    await run_workload(js, provisioned.url, bots, n_ok=20, n_fail=0)
    await eventually(lambda: _at_least(js, "results", 50), timeout=40, what="second wave")
    bot.signal(signal.SIGTERM)
    bot.wait()
    await eventually(lambda: caught_up(js), what="the ledger to catch up")
    assert ledger.stop() == 0

    rebuilt, past = tmp_path / "rebuilt.duckdb", tmp_path / "past.duckdb"
    done = run_cli(provisioned.url, "ledger", "--db", str(rebuilt), "--rebuild")
    assert done.returncode == 0, done.stderr
    for table in TABLES:
        assert table_rows(rebuilt, table) == table_rows(live, table), table
    done = run_cli(provisioned.url, "ledger", "--db", str(past), "--rebuild", "--until", between.isoformat())
    assert done.returncode == 0, done.stderr
    assert len(table_rows(past, "results")) == 30 and len(table_rows(past, "dead_letters")) == 1
    refused = run_cli(provisioned.url, "ledger", "--db", str(past))
    assert refused.returncode == 2 and "snapshot" in refused.stderr


async def test_bad_sql_and_write_statements_get_clear_errors(js, provisioned, ledgers, tmp_path):
    """Given a running ledger, then a syntax error, a write, a file read and a runaway query are refused with reasons."""
    ledgers(provisioned.url, tmp_path / "ledger.duckdb", "--query-timeout", "1")
    await eventually(lambda: _answers(js), what="the query service")
    with pytest.raises(QueryError, match="syntax error"):
        await ask(js._nc, "SELEC * FROM jobs")
    with pytest.raises(QueryError, match="read-only: DROP") as refused:
        await ask(js._nc, "DROP TABLE jobs")
    assert refused.value.code == "403"
    with pytest.raises(QueryError, match="disabled by configuration"):
        await ask(js._nc, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryError, match="time limit") as slow:
        await ask(js._nc, "SELECT count(*) FROM range(1000000000000) a, range(1000) b")
    assert slow.value.code == "408"
    capped = await ask(js._nc, "SELECT * FROM range(50)", max_rows=10)
    assert len(capped.rows) == 10 and capped.truncated
    cli = run_cli(provisioned.url, "query", "DELETE FROM results")
    assert cli.returncode == 1 and "read-only: DELETE statements are refused" in cli.stderr
    cli = run_cli(provisioned.url, "query", "SELECT nope FROM jobs")
    assert cli.returncode == 1 and 'Referenced column "nope" not found' in cli.stderr
    cli = run_cli(provisioned.url, "query", "SELECT 41 + 1 AS answer", "--format", "csv")
    assert cli.returncode == 0 and cli.stdout.splitlines() == ["answer", "42"]


async def _answers(js) -> bool:
    return await count(js, "jobs") == 0


async def test_parquet_files_read_back_with_the_same_rows_as_the_tables(js, provisioned, bots, ledgers, tmp_path):
    """Given a ledger exporting Parquet, when it stops, then the day-partitioned files hold exactly the tables' rows."""
    db, out = tmp_path / "ledger.duckdb", tmp_path / "parquet"
    ledger = ledgers(provisioned.url, db, "--parquet", str(out))
    bots(provisioned.url, "b1")
    await run_workload(js, provisioned.url, bots, n_ok=60, n_fail=0)
    await eventually(lambda: _at_least(js, "results", 60), timeout=40, what="60 results")
    await eventually(lambda: caught_up(js), what="the ledger to catch up")
    assert ledger.stop() == 0
    first_files = sorted(out.glob("results/day=*/part-*.parquet"))
    assert first_files
    # A second export finds nothing new: files are immutable and never duplicated.
    again = run_cli(provisioned.url, "ledger", "--db", str(db), "--export", str(out))
    assert again.returncode == 0 and "wrote 0 file(s)" in again.stdout
    con = duckdb.connect()
    for table in ("results", "events"):
        files = str(out / table / "*" / "*.parquet")
        exported = set(con.execute(f"SELECT * EXCLUDE (day) FROM read_parquet('{files}', hive_partitioning = true)").fetchall())
        assert exported == table_rows(db, table), table
