"""nats-py without its websocket transport until a ``ws://`` server needs it.

nats-py's transport module imports aiohttp whenever aiohttp is installed, though only
``ws://`` and ``wss://`` servers use it. aiohttp is no corral dependency, but anything else in
the environment can bring it in (the ``bench`` extra's taskiq-nats does), and then every corral
process pays for it: about 13 MB of RSS per bot, a quarter of what a bot holds. So the
package's first import loads nats-py with aiohttp hidden, and :func:`websockets` brings it
back for a connection that asks for a websocket server (connect.py).
"""

from __future__ import annotations

import sys


def import_nats() -> None:
    """Import nats-py's transport with aiohttp hidden, unless either is loaded already."""
    if "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` now raises ImportError
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]  # later importers (an application, taskiq) get the real one


def websockets() -> None:
    """Give nats-py's websocket transport its aiohttp (ImportError if it is not installed)."""
    import nats.aio.transport as transport

    if transport.aiohttp is None:
        import aiohttp

        transport.aiohttp = aiohttp
