"""Asking the ledger's query service: the CLI, the TUI and scripts go through :func:`ask`."""

from __future__ import annotations

from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from corral.core.errors import TransportError
from corral.ledger.errors import QueryError
from corral.core.names import LEDGER_QUERY_SUBJECT as QUERY_SUBJECT
from corral.ledger.query import QueryReply, QueryRequest, failure_decoder, reply_decoder
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER


async def ask(nc: NATS, sql: str, *, max_rows: int = 1000, timeout: float = 30.0, params: list[Any] | None = None) -> QueryReply:
    """Run ``sql`` on the ledger service (``params`` bound to its ``?``) and return its reply.

    Raises:
        QueryError: the service refused or failed the query (the message says why).
        TransportError: no ledger service answered.
    """
    payload = msgspec.json.encode(QueryRequest(sql=sql, max_rows=max_rows, params=list(params or [])))
    try:
        msg = await nc.request(QUERY_SUBJECT, payload, timeout=timeout)
    except nats.errors.NoRespondersError as e:
        raise TransportError("no ledger service is running: start one with `corral ledger --db PATH`") from e
    except nats.errors.TimeoutError as e:
        raise TransportError(f"the ledger service did not answer within {timeout}s") from e
    headers = msg.headers or {}
    if ERROR_HEADER in headers:
        try:
            failure = failure_decoder.decode(msg.data)
            raise QueryError(failure.error, code=failure.code)
        except msgspec.DecodeError:
            raise QueryError(headers[ERROR_HEADER], code=headers.get(ERROR_CODE_HEADER, "500")) from None
    return reply_decoder.decode(msg.data)
