"""The analytics ledger: corral's streams folded into a DuckDB file, queried over NATS.

Library entry points (the CLI and the TUI use these):

- :class:`Ledger` / :class:`LedgerConfig`: the service (ingest + query endpoint + export).
- :class:`LedgerStore`: one open DuckDB file (batched writes, guarded reads).
- :func:`ask`: run SQL on a running ledger service over NATS.
- :func:`rebuild`: rebuild a ledger file from the streams, optionally as of a time.
- :data:`REPORTS`: the canned reports.

docs/analytics.md documents the schema and the design.
"""

import importlib

# Names resolve on first use (PEP 562): importing corral.ledger.reports must not load DuckDB.
# Import `rebuild` from corral.ledger.rebuild: once that submodule is loaded, the package
# attribute of the same name is the module, not the function.
_WHERE = {
    "ask": "client", "LedgerLockedError": "errors", "QueryError": "errors", "SnapshotError": "errors",
    "export_all": "export", "BatchPolicy": "ingest", "QueryReply": "query", "rebuild": "rebuild",
    "REPORTS": "reports", "Report": "reports", "Ledger": "service", "LedgerConfig": "service",
    "LedgerStore": "store", "QueryResult": "store",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"corral.ledger.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'corral.ledger' has no attribute {name!r}")


__all__ = [
    "REPORTS",
    "BatchPolicy",
    "Ledger",
    "LedgerConfig",
    "LedgerLockedError",
    "LedgerStore",
    "QueryError",
    "QueryReply",
    "QueryResult",
    "Report",
    "SnapshotError",
    "ask",
    "export_all",
    "rebuild",
]
