"""The ledger's errors, in corral's one tree (core/errors.py) as subclasses."""

from __future__ import annotations

from corral.core.errors import ConfigError, CorralError


class LedgerLockedError(ConfigError):
    """Raised when the DuckDB file is held by another process (DuckDB allows one writer per file)."""

    title = "ledger file in use"


class SnapshotError(ConfigError):
    """Raised when live ingest is asked to write into a time-travel snapshot (built with --until)."""

    title = "ledger is a snapshot"


class QueryError(CorralError):
    """Raised when the ledger refuses a query (not read-only, too slow) or DuckDB rejects it."""

    title = "query failed"

    def __init__(self, message: str, code: str = "400") -> None:
        super().__init__(message)
        self.code = code


class InvalidSearchError(QueryError):
    """A payload search (``args.user=42 kind=resize``) that cannot be turned into a query."""

    title = "bad search"
