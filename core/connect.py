"""Connecting to NATS, waiting for it, and turning its failures into corral errors.

Start order never matters: every corral process calls :func:`connect` with
``wait=True`` and :func:`wait_for_resources`, which retry with backoff (stamina)
and log what they wait for, until the server is up and provisioned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import stamina
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core.nats_client import open_client
from corral.core.lean_nats import websockets
from corral.core.errors import (
    ErrorCode,
    InvalidJobError,
    MissingResourceError,
    ResultAlreadyRecordedError,
    StreamFullError,
    TransportError,
)
from corral.core.log import Logger
from corral.core.names import is_result_subject
from corral.core.settings import Settings

#: Exceptions that mean "NATS did not answer (yet)": worth a retry with backoff.
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    TransportError,
    OSError,
    TimeoutError,
)

#: Codes of a publish refused because a stream or the server's store is full.
FULL = (ErrorCode.STREAM_STORE_FAILED, ErrorCode.INSUFFICIENT_RESOURCES, ErrorCode.STORAGE_RESOURCES_EXCEEDED)

Callback = Callable[[], Awaitable[None]]


async def _noop() -> None:
    return None


async def connect(
    settings: Settings,
    log: Logger,
    *,
    wait: bool = True,
    on_disconnect: Callback = _noop,
    on_reconnect: Callback = _noop,
    **options: Any,
) -> NATS:
    """Connect, retrying forever with backoff when ``wait`` (daemons), once otherwise (CLI).

    The client reconnects forever after that (``max_reconnect_attempts=-1``): the
    default gives up after about two minutes and closes for good.

    Raises:
        TransportError: ``wait`` is false and no server answered.
    """

    nc: NATS | None = None

    async def disconnected() -> None:
        if nc is None or nc.is_closed or nc.is_draining:
            return  # our own close, not a lost connection
        log.warning("nats.disconnected", servers=settings.display)
        await on_disconnect()

    async def reconnected() -> None:
        log.info("nats.reconnected", server=str(nc.connected_url.netloc if nc and nc.connected_url else ""))
        await on_reconnect()

    connected = False
    last_error: list[str] = []

    async def error(e: Exception) -> None:
        # Permission denials reach the caller as plain timeouts; the reason only arrives here.
        if connected:
            log.warning("nats.error", error=str(e) or type(e).__name__)
        else:
            last_error[:] = [str(e) or type(e).__name__]

    if any(url.startswith(("ws://", "wss://")) for url in settings.servers):
        websockets()
    kwargs: dict[str, Any] = dict(
        servers=list(settings.servers),
        name=settings.client_name,
        # Bounded for the first connect (nats-py would otherwise loop inside connect() forever,
        # silently); set to -1 (reconnect forever) once connected, below.
        max_reconnect_attempts=1,
        reconnect_time_wait=0.5,
        # A cut cable gives no reset: a dead link is noticed only by unanswered pings, so
        # within 15-20 s (interval x outstanding, plus one interval); docs/cluster.md.
        ping_interval=5,
        max_outstanding_pings=3,
        connect_timeout=2,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        user=settings.user,
        password=settings.password,
        token=settings.token,
        user_credentials=settings.creds_file,
        nkeys_seed=settings.nkeys_seed,
        inbox_prefix=settings.inbox_prefix,
        tls=settings.ssl_context(),
    )
    kwargs.update(options)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    # nats-py 2.16 can hang inside connect() after a failed TLS handshake (one error callback,
    # then nothing), so every first connect has a deadline.
    deadline = kwargs["connect_timeout"] * 2 * len(settings.servers) + 3

    async def attempt_connect() -> NATS:
        try:
            return await asyncio.wait_for(open_client(**kwargs), deadline)
        except TimeoutError as e:
            raise TransportError(f"no connection within {deadline}s: {last_error[0] if last_error else 'no answer'}") from e

    if not wait:
        try:
            nc = await attempt_connect()
        except (nats.errors.NoServersError, OSError, nats.errors.Error, TimeoutError, TransportError) as e:
            reason = last_error[0] if last_error and not isinstance(e, TransportError) else (str(e) or type(e).__name__)
            raise TransportError(
                f"cannot reach NATS at {settings.display}: {reason}. "
                "Is the server running (`corral up` or `just up`)? Set --server or CORRAL_NATS_URL "
                "(and CORRAL_NATS_TLS_CA for a server that requires TLS)."
            ) from e
        nc.options["max_reconnect_attempts"] = -1
        connected = True
        return nc
    async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=None, wait_max=5.0):
        with attempt:
            if attempt.num > 1:
                log.info("nats.waiting", servers=settings.display, attempt=attempt.num, last_error=last_error[0] if last_error else None)
            nc = await attempt_connect()
    assert nc is not None, "the retry loop ends only once a connect succeeded"
    nc.options["max_reconnect_attempts"] = -1
    connected = True
    log.info("nats.connected", servers=settings.display)
    return nc


def publish_error(e: Exception, subject: str) -> Exception:
    """Translate a failed JetStream publish into the corral error a caller can act on.

    Classified by the server's error code. A stream limit refusing a message is one code
    (:attr:`ErrorCode.STREAM_STORE_FAILED`) whichever limit it was, so the subject tells them
    apart: results carry no size limits (only one message per job), so there it is the fence.
    """
    if isinstance(e, nats.js.errors.APIError):
        # 10071: the cross-bot fence (another bot's result for the job); 10077: the per-subject limit.
        fence = (ErrorCode.STREAM_WRONG_LAST_SEQUENCE, ErrorCode.STREAM_STORE_FAILED)
        if e.err_code in fence and is_result_subject(subject):
            return ResultAlreadyRecordedError(f"a result for {subject} is already recorded ({e.description})")
        if e.err_code in FULL:
            return StreamFullError(
                f"the stream refused {subject}: {e.description}. Nothing was enqueued for this message; "
                "let the bots drain the backlog, raise the stream's max_msgs/max_bytes in streams/, "
                "or free disk space, then submit again"
            )
        return e
    if isinstance(e, nats.errors.MaxPayloadError):
        return InvalidJobError(
            f"the message for {subject} is larger than the server's max_payload (1 MB in nats.conf): "
            "pass a reference to large data (a path or URL) in the job's args instead"
        )
    if isinstance(e, nats.js.errors.NoStreamResponseError):
        return TransportError(
            f"no stream answered for {subject}: not provisioned (run `corral provision`), "
            "or the server is restarting or electing a leader"
        )
    if isinstance(e, (nats.errors.TimeoutError, TimeoutError)):
        return TransportError(f"no acknowledgement for {subject} from JetStream in time "
                              "(the job may or may not have landed; resubmitting is safe)")
    return e


async def wait_for_resources(js: JetStreamContext, log: Logger, streams: list[str], consumers: Sequence[tuple[str, str]] = ()) -> None:
    """Block until every named stream and consumer exists, logging what is missing.

    Retries forever with backoff: a bot started before `corral provision` starts
    working by itself once it has run.
    """
    async for attempt in stamina.retry_context(
        on=(MissingResourceError, *TRANSIENT, nats.js.errors.NotFoundError), attempts=None, timeout=None, wait_max=5.0
    ):
        with attempt:
            for stream in streams:
                try:
                    await js.stream_info(stream)
                except nats.js.errors.NotFoundError as e:
                    log.info("resources.waiting", stream=stream, hint="run `corral provision`", attempt=attempt.num)
                    raise MissingResourceError(f"stream {stream} missing") from e
            for stream, consumer in consumers:
                try:
                    await js.consumer_info(stream, consumer)
                except nats.js.errors.NotFoundError as e:
                    log.info("resources.waiting", consumer=consumer, hint="run `corral provision`", attempt=attempt.num)
                    raise MissingResourceError(f"consumer {consumer} missing") from e
