"""A private nats-server per scenario and fsync setting, provisioned from streams/.

The server is the real one (:class:`corral.harness.server.EmbeddedServer`) with the
repository's nats.conf. For the lazy fsync setting a copy of nats.conf with
only ``sync_interval`` replaced goes into the server's temporary home, so the
two runs differ in nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from corral.core.connect import connect
from corral.core.errors import ConfigError
from corral.core.log import get_logger
from corral.core.names import DLQ_STREAM, EVENTS_STREAM, JOBS_STREAM, RESULTS_STREAM
from corral.harness.server import NATS_CONF, EmbeddedServer
from corral.core.settings import Settings
from corral.streams import load_declarations
from corral.streams.provision import provision, provision_url

#: The shipped setting first: it is the one corral promises.
SYNC_CHOICES = {"always": ("always",), "2m": ("2m",), "both": ("always", "2m")}
_SYNC_LINE = re.compile(r"(?m)^(\s*sync_interval:\s*)\S+")


def config_with_sync(home: Path, sync: str) -> Path:
    """nats.conf itself for ``always``; otherwise a copy in ``home`` with ``sync_interval`` replaced.

    Raises:
        ConfigError: nats.conf has no ``sync_interval`` line to replace.
    """
    text = NATS_CONF.read_text()
    line = _SYNC_LINE.search(text)
    if not line:
        raise ConfigError(f"{NATS_CONF} has no sync_interval line; cannot benchmark sync={sync}")
    if line.group(0).split(":", 1)[1].strip().strip('"') == sync:
        return NATS_CONF
    path = home / "nats.conf"
    path.write_text(_SYNC_LINE.sub(lambda m: f'{m.group(1)}"{sync}"', text, count=1))
    return path


@dataclass(frozen=True)
class ServerInfo:
    """What the record says about the server under test."""

    version: str
    sync_interval: str
    sync_always: bool

    @classmethod
    def read(cls, server: EmbeddedServer) -> ServerInfo:
        with urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=5) as resp:
            varz: dict[str, Any] = json.load(resp)
        js = varz.get("jetstream", {}).get("config", {})
        always = bool(js.get("sync_always", False))
        # /varz gives the interval in nanoseconds and keeps the 2m default beside sync_always.
        interval = "always" if always else f"{js.get('sync_interval', 0) / 1e9:g}s"
        return cls(varz.get("version", "?"), interval, always)


@contextmanager
def running_server(sync: str, log_dir: Path) -> Iterator[EmbeddedServer]:
    """A started server with ``sync_interval`` = ``sync``; stopped and its store removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    server = EmbeddedServer(home, config=config_with_sync(home, sync), log_file=log_dir / f"nats-server-{sync}.log")
    try:
        server.start()
        yield server
    finally:
        server.resume()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


async def provision_for_bench(url: str, **consumer_overrides: Any) -> None:
    """Apply streams/ (consumer fields overridden as given), then empty the corral streams."""
    decls = [d.with_config(**consumer_overrides) if d.kind == "consumer" and consumer_overrides else d
             for d in load_declarations()]
    await provision_url(url, decls, log=get_logger("bench"))
    nc = await connect(Settings(servers=(url,)), get_logger("bench"), wait=False)
    try:
        js = nc.jetstream()
        for stream in (JOBS_STREAM, RESULTS_STREAM, EVENTS_STREAM, DLQ_STREAM):
            await js.purge_stream(stream)
    finally:
        await nc.close()


def add_lazy_flag(parser: argparse.ArgumentParser) -> None:
    """A script benchmark's ``--lazy``: its :func:`standalone` server with the default fsync."""
    parser.add_argument("--lazy", action="store_true", help="the server's default fsync instead of sync_interval: always")


def fsync_name(lazy: bool) -> str:
    return "lazy (server default)" if lazy else "always"


@asynccontextmanager
async def standalone(lazy: bool) -> AsyncIterator[tuple[EmbeddedServer, NATS]]:
    """For a benchmark run as a script: a server of its own (``sync_interval: always``, or the lazy
    default), provisioned, and a client on it; store and log removed afterwards."""
    with tempfile.TemporaryDirectory() as logs, running_server("2m" if lazy else "always", Path(logs)) as server:
        nc = await nats.connect(server.url)
        try:
            await provision(nc, load_declarations())
            yield server, nc
        finally:
            await nc.close()
