"""The read-only query service: ``corral.ledger.query`` over NATS, served with nats.micro.

Request: ``{"sql": "SELECT ...", "max_rows": 1000}``. Reply: ``{"columns": [...],
"types": [...], "rows": [[...]], "truncated": false, "elapsed_ms": 1.2}``, or a
micro error (headers ``Nats-Service-Error`` / ``Nats-Service-Error-Code``; the
body then holds ``{"error": ..., "code": ...}``).

Guards, in order: exactly one SELECT-like statement (:func:`check_read_only`),
a READ ONLY transaction that is always rolled back, DuckDB's
``enable_external_access=false`` (set on the store), a time limit after which
the query is interrupted, a row cap, and a reply size cap under NATS's
``max_payload``. Requests are answered one at a time (a micro endpoint is one
subscription), so a slow query delays the next: the time limit bounds that.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from corral.ledger.errors import QueryError
from corral.core.names import LEDGER_QUERY_SUBJECT as QUERY_SUBJECT
from corral.core.names import LEDGER_SERVICE_NAME as SERVICE_NAME
from corral.core.names import LEDGER_SERVICE_VERSION as SERVICE_VERSION
from corral.ledger.store import LedgerStore, QueryResult
from corral.core.log import Logger


class QueryRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A request on ``corral.ledger.query`` (the ``query`` endpoint of the ``corral-ledger`` service)."""

    #: One read-only statement (SELECT, WITH ... SELECT); a write is refused with code "403".
    sql: str
    #: Rows wanted; the service caps it at its own ``--max-rows``.
    max_rows: int = 1000
    #: Values bound to the statement's ``?`` placeholders, in order (so a caller never splices user input into SQL).
    params: list[Any] = []


class QueryReply(msgspec.Struct, kw_only=True):
    """The answer to a :class:`QueryRequest` that ran (no ``Nats-Service-Error`` header)."""

    #: Column names, in the order of every row.
    columns: list[str]
    #: DuckDB type names, one per column (``VARCHAR``, ``BIGINT``, ``TIMESTAMP``, ``JSON``, ...).
    types: list[str]
    #: Each row an array in column order. JSON columns arrive as strings holding JSON text, timestamps as ISO 8601 text (UTC, no offset).
    rows: list[list[Any]]
    #: True when rows were dropped: the row cap or the reply size cap (under the server's max_payload) was reached.
    truncated: bool = False
    elapsed_ms: float = 0.0


class QueryFailure(msgspec.Struct, kw_only=True):
    """The body of a refused or failed query; the reply also carries ``Nats-Service-Error`` and ``Nats-Service-Error-Code``."""

    error: str
    #: An HTTP-like status as a string: "400" invalid SQL or request, "403" not read-only, "408" past the time limit.
    code: str


request_decoder = msgspec.json.Decoder(QueryRequest)
reply_decoder = msgspec.json.Decoder(QueryReply)
failure_decoder = msgspec.json.Decoder(QueryFailure)
# DuckDB hands back datetimes, Decimals, UUIDs, bytes, intervals: msgspec knows most; str() the rest.
_encoder = msgspec.json.Encoder(enc_hook=str)


def run_with_timeout(store: LedgerStore, sql: str, *, max_rows: int, timeout: float, params: list[Any] | None = None) -> QueryResult:
    """Run a query, interrupting it after ``timeout`` seconds (blocking; call from a worker thread).

    Raises:
        QueryError: refused, invalid, or interrupted.
    """
    cursor = store.cursor()
    timer = threading.Timer(timeout, cursor.interrupt)
    timer.start()
    try:
        return store.query(sql, max_rows=max_rows, cursor=cursor, params=params)
    finally:
        timer.cancel()
        cursor.close()


def encode_reply(result: QueryResult, elapsed: float, max_bytes: int) -> bytes:
    """The JSON reply, dropping rows from the end (and marking it truncated) until it fits ``max_bytes``."""
    rows = [list(r) for r in result.rows]
    truncated = result.truncated
    while True:
        reply = QueryReply(columns=result.columns, types=result.types, rows=rows, truncated=truncated, elapsed_ms=round(elapsed * 1000, 2))
        data = _encoder.encode(reply)
        if len(data) <= max_bytes or not rows:
            return data
        rows, truncated = rows[: len(rows) // 2], True


class QueryService:
    """Answers ``corral.ledger.query`` from a :class:`LedgerStore`."""

    def __init__(self, store: LedgerStore, log: Logger, *, timeout: float = 10.0, max_rows: int = 10_000) -> None:
        self.store = store
        self.log = log
        self.timeout = timeout
        self.max_rows = max_rows
        self.service: Service | None = None

    async def start(self, nc: NATS) -> None:
        self.max_bytes = max(nc.max_payload - 4096, 4096)  # headroom for headers
        self.service = await add_service(nc, name=SERVICE_NAME, version=SERVICE_VERSION,
                                         description="corral analytics ledger: read-only SQL over DuckDB")
        await self.service.add_endpoint(name="query", subject=QUERY_SUBJECT, handler=self.handle)
        self.log.info("ledger.query_service", subject=QUERY_SUBJECT, timeout=self.timeout, max_rows=self.max_rows)

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    async def handle(self, req: Request) -> None:
        started = time.perf_counter()
        try:
            request = request_decoder.decode(req.data)
            max_rows = max(1, min(request.max_rows, self.max_rows))
            result = await anyio.to_thread.run_sync(
                lambda: run_with_timeout(self.store, request.sql, max_rows=max_rows, timeout=self.timeout, params=request.params)
            )
        except msgspec.DecodeError as e:
            await self._fail(req, QueryError(f'the request must be JSON {{"sql": "...", "max_rows": N}}: {e}'), started)
            return
        except QueryError as e:
            await self._fail(req, e, started)
            return
        elapsed = time.perf_counter() - started
        await req.respond(encode_reply(result, elapsed, self.max_bytes))
        self.log.info("ledger.query", rows=len(result.rows), truncated=result.truncated, ms=round(elapsed * 1000, 1))

    async def _fail(self, req: Request, e: QueryError, started: float) -> None:
        text = str(e).replace("\r", " ").replace("\n", " ")[:1000]
        await req.respond_error(e.code, text, data=_encoder.encode(QueryFailure(error=str(e), code=e.code)))
        self.log.info("ledger.query_refused", code=e.code, error=text, ms=round((time.perf_counter() - started) * 1000, 1))
