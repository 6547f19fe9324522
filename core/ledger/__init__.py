"""The analytics ledger: corral's streams folded into a DuckDB file, queried over NATS.

Library entry points (the CLI and the TUI use these):

- :class:`Ledger` / :class:`LedgerConfig`: the service (ingest + query endpoint + export).
- :class:`LedgerStore`: one open DuckDB file (batched writes, guarded reads).
- :func:`ask`: run SQL on a running ledger service over NATS.
- :func:`rebuild`: rebuild a ledger file from the streams, optionally as of a time.
- :data:`REPORTS`: the canned reports.

docs/analytics.md documents the schema and the design.
"""

from core.ledger.client import ask
from core.ledger.errors import LedgerLockedError, QueryError, SnapshotError
from core.ledger.export import export_all
from core.ledger.ingest import BatchPolicy
from core.ledger.query import QueryReply
from core.ledger.rebuild import rebuild
from core.ledger.reports import REPORTS, Report
from core.ledger.service import Ledger, LedgerConfig
from core.ledger.store import LedgerStore, QueryResult

__all__ = [
    "BatchPolicy",
    "Ledger",
    "LedgerConfig",
    "LedgerLockedError",
    "LedgerStore",
    "QueryError",
    "QueryReply",
    "QueryResult",
    "REPORTS",
    "Report",
    "SnapshotError",
    "ask",
    "export_all",
    "rebuild",
]
