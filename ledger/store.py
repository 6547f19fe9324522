"""The DuckDB file: opening it safely, writing batches, and answering read-only queries.

One :class:`LedgerStore` owns one file. DuckDB lets a single process open a
file for writing, so the ingest and the query service share this instance:
writes go through :meth:`write` (one transaction per batch), queries through
:meth:`query` on their own cursor inside a READ ONLY transaction.

Hardening, applied before anything else runs and then locked:
``enable_external_access=false`` (no reading or writing host files, no network,
no extension installs) with ``allowed_directories`` opening only the Parquet
export folder, and ``lock_configuration=true`` so a query cannot undo it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from corral.ledger.errors import LedgerLockedError, QueryError, SnapshotError
from corral.ledger.rows import Rows
from corral.ledger.schema import META, REFRESH_BOTS, SCHEMA_VERSION, TABLES, UPGRADES, VIEWS

_BY_NAME = {t.name: t for t in TABLES}
#: Insert order inside a batch transaction; bots are recomputed last, from events.
_WRITE_ORDER = ("jobs", "results", "events", "dead_letters")
#: Statement types a query may be: one SELECT (WITH, FROM-first, DESCRIBE, SUMMARIZE, SHOW parse as SELECT) or EXPLAIN.
_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool  #: more rows existed than the cap allowed


def check_read_only(sql: str) -> None:
    """Accept exactly one SELECT-like statement.

    Raises:
        QueryError: the SQL does not parse, holds several statements, or would write.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"SQL error: {_first_line(e)}") from e
    if len(statements) != 1:
        raise QueryError(f"one statement per query, got {len(statements)}")
    kind = statements[0].type
    if kind not in _READ_TYPES:
        raise QueryError(f"the ledger is read-only: {kind.name} statements are refused (use SELECT or WITH ... SELECT)", code="403")


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed statement already ended the transaction


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class LedgerStore:
    """One open ledger file. Thread-safe: writes are serialized, each query gets a cursor."""

    def __init__(self, path: Path, *, export_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path))
        except duckdb.IOException as e:
            raise LedgerLockedError(
                f"cannot open {self.path}: {_first_line(e)}. DuckDB allows one process per file: "
                "stop the running `corral ledger`, or query it with `corral query`"
            ) from e
        allowed = [str(export_dir.resolve()) + "/"] if export_dir else []
        if export_dir:
            export_dir.mkdir(parents=True, exist_ok=True)
        self.con.execute("SET allowed_directories = ?", [allowed])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        self._lock = threading.Lock()
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        with self._lock:
            for table in TABLES:
                self.con.execute(table.ddl())
            for view in VIEWS:
                self.con.execute(view)
            version = self.meta("schema_version")
            while version is not None and version.isdigit() and int(version) in UPGRADES:
                for statement in UPGRADES[int(version)]:
                    self.con.execute(statement)
                version = str(int(version) + 1)
                self.con.execute("UPDATE ledger_meta SET value = ? WHERE key = 'schema_version'", [version])
            if version is None:
                self.con.execute("INSERT INTO ledger_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            elif version != str(SCHEMA_VERSION):
                raise SnapshotError(f"{self.path} has ledger schema {version}, this corral writes {SCHEMA_VERSION}: rebuild it (--rebuild)")

    # -- facts about the file ----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.con.cursor().execute("SELECT value FROM ledger_meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self.con.execute("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [key, value])

    def counts(self) -> dict[str, int]:
        cur = self.con.cursor()
        return {t.name: cur.execute(f"SELECT count(*) FROM {t.name}").fetchall()[0][0] for t in TABLES if t is not META}

    # -- writing -----------------------------------------------------------------------------

    def write(self, rows: Rows) -> None:
        """Insert one batch in one transaction. Rows whose key exists are ignored (redeliveries).

        Raises:
            duckdb.Error: nothing was committed; the caller must not ack the batch.
        """
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                for name in _WRITE_ORDER:
                    if rows.tables.get(name):
                        self._insert(name, rows.tables[name])
                if rows.bots:
                    self.con.execute(REFRESH_BOTS, [sorted(rows.bots)])
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise

    def _insert(self, name: str, rows: list[tuple]) -> None:
        table = _BY_NAME[name]
        key = [table.names.index(k) for k in table.key]
        unique: dict[tuple, tuple] = {}
        for row in rows:  # a batch may carry the same key twice (a redelivery inside one fetch)
            unique.setdefault(tuple(row[i] for i in key), row)
        columns = [list(col) for col in zip(*unique.values(), strict=True)]
        self.con.execute(table.insert_sql(), columns)

    def reset(self) -> None:
        """Empty every table (a rebuild starts from nothing)."""
        with self._lock:
            for table in TABLES:
                if table is not META:
                    self.con.execute(f"DELETE FROM {table.name}")

    # -- reading -----------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def query(self, sql: str, *, max_rows: int, cursor: duckdb.DuckDBPyConnection | None = None,
              params: list[Any] | None = None) -> QueryResult:
        """Run one read-only statement and return at most ``max_rows`` rows (``params`` bind its ``?``).

        ``cursor`` lets a caller keep a handle to ``interrupt()`` it from another thread.

        Raises:
            QueryError: refused (not read-only), invalid SQL, or interrupted.
        """
        check_read_only(sql)
        cur = cursor or self.con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                cur.execute(sql, params) if params else cur.execute(sql)
                columns = [d[0] for d in cur.description or []]
                types = [str(d[1]) for d in cur.description or []]
                rows = cur.fetchmany(max_rows + 1)
            finally:
                _rollback(cur)
        except duckdb.InterruptException as e:
            raise QueryError("query interrupted: it ran past the time limit", code="408") from e
        except duckdb.Error as e:
            raise QueryError(f"SQL error: {_first_line(e)}") from e
        return QueryResult(columns, types, rows[:max_rows], len(rows) > max_rows)

    def execute_admin(self, sql: str, params: list[Any] | None = None) -> None:
        """Run a trusted statement (exports) under the write lock."""
        with self._lock:
            self.con.execute(sql, params or [])

    def close(self) -> None:
        """Checkpoint and close (DuckDB folds the WAL into the file on close)."""
        with self._lock:
            self.con.close()
