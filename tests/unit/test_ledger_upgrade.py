"""A ledger file written by an older corral is brought forward in place, keeping its rows."""

from __future__ import annotations

import duckdb

from corral.ledger.schema import SCHEMA_VERSION
from corral.ledger.store import LedgerStore


def test_a_version_1_ledger_gains_the_trace_columns_and_keeps_its_rows(tmp_path):
    """Given a file at schema 1 (no trace_id columns) with a result row, opening it upgrades it and the row stays."""
    path = tmp_path / "old.duckdb"
    LedgerStore(path).con.close()
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE results DROP COLUMN trace_id")
    con.execute("ALTER TABLE events DROP COLUMN trace_id")
    con.execute("INSERT INTO results (job_id, seq, kind) VALUES ('j1', 1, 'sum')")
    con.execute("UPDATE ledger_meta SET value = '1' WHERE key = 'schema_version'")
    con.close()

    store = LedgerStore(path)
    assert store.meta("schema_version") == str(SCHEMA_VERSION)
    assert store.con.execute("SELECT job_id, kind, trace_id FROM results").fetchall() == [("j1", "sum", None)]
    assert "trace_id" in [row[0] for row in store.con.execute("DESCRIBE events").fetchall()]
