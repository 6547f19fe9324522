"""One raw JetStream API request, JSON in and out.

Raw calls keep fields nats-py's config classes would drop (the provisioner
compares declarations against exactly what the server stores). This module
depends only on the vocabulary, so :mod:`corral.streams.provision` can use it
without the streams package depending on the rest of the client library.
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from corral.core.errors import ErrorCode, MissingResourceError, TransportError
from corral.core.names import api_subject

#: API error codes that mean "not provisioned": the caller is told to run `corral provision`.
MISSING = (ErrorCode.STREAM_NOT_FOUND, ErrorCode.CONSUMER_NOT_FOUND)


async def api(nc: NATS, op: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Send ``op`` (``STREAM.INFO.<name>``, ...) to ``$JS.API.<op>`` and return the JSON answer.

    ``timeout`` is in seconds.

    Raises:
        MissingResourceError: the stream or consumer does not exist.
        TransportError: no answer in time.
        nats.js.errors.APIError: any other API error (``err_code`` is an :class:`ErrorCode`).
    """
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await nc.request(api_subject(op), payload, timeout=timeout)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise TransportError(
            f"JetStream did not answer {op} in {timeout}s (server down, JetStream off, or a permission denial)"
        ) from e
    resp = json.loads(msg.data)
    if "error" in resp:
        try:
            nats.js.errors.APIError.from_error(resp["error"])  # raises the matching subclass
        except nats.js.errors.APIError as err:
            if err.err_code in MISSING:
                raise MissingResourceError(f"{err.description}: run `corral provision`") from err
            raise
    return resp
