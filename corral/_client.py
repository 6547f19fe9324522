"""The application-facing connect: settings from the environment unless given, corral's logger."""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client as NATS

from corral.core.connect import connect as _connect
from corral.core.log import get_logger
from corral.core.settings import Settings


async def connect(servers: str | Sequence[str] | Settings | None = None, *, wait: bool = False) -> NATS:
    """Connect to NATS the way every corral command does.

    ``servers`` is a URL, a list of URLs (a cluster) or a :class:`Settings`; without it the
    environment decides (``CORRAL_NATS_URL`` and the ``CORRAL_NATS_*`` credentials, as for the
    `corral` command). ``wait`` retries with backoff until a server answers (for daemons);
    otherwise one bounded attempt is made.

    Raises:
        TransportError: ``wait`` is false and no server answered.
    """
    if isinstance(servers, Settings):
        settings = servers
    elif servers is None:
        settings = Settings.from_env()
    else:
        urls = (servers,) if isinstance(servers, str) else tuple(servers)
        settings = Settings.from_env(server=",".join(urls))
    return await _connect(settings, get_logger("corral"), wait=wait)
