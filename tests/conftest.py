"""Fixtures: a real nats-server per test (free port, temporary store), provisioned from streams/.

Tests shorten the ack deadline and liveness TTL through :data:`FAST`, the same
way an operator edits streams/*.json; everything else is the shipped config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.harness.procs import BotProcess
from corral.harness.server import EmbeddedServer
from corral.core.settings import Settings

NS = 1_000_000_000
#: Consumer overrides for tests: a 2 s ack deadline so crash recovery is quick.
FAST = {"ack_wait": 2 * NS}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A running nats-server with the repo's nats.conf, torn down after the test."""
    server = EmbeddedServer(tmp_path / "nats").start()
    yield server
    server.resume()
    server.kill()


@pytest.fixture
def settings(nats_server: EmbeddedServer) -> Settings:
    return Settings(servers=(nats_server.url,))


async def provision_async(url: str, **consumer_overrides) -> None:
    """Apply streams/ with the test consumer overrides (FAST plus any given)."""
    from corral.streams import load_declarations
    from corral.streams.provision import provision_url

    decls = [d.with_config(**{**FAST, **consumer_overrides}) if d.kind == "consumer" else d for d in load_declarations()]
    await provision_url(url, decls)


def provision_sync(url: str, **consumer_overrides) -> None:
    """:func:`provision_async` from synchronous code (fixtures)."""
    import anyio

    anyio.run(lambda: provision_async(url, **consumer_overrides))


@pytest.fixture
def provisioned(nats_server: EmbeddedServer) -> EmbeddedServer:
    provision_sync(nats_server.url)
    return nats_server


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def bots(tmp_path: Path) -> Iterator[Callable[..., BotProcess]]:
    """Factory: ``bots(url, name, *extra_args)`` starts a bot process; all are killed at teardown."""
    started: list[BotProcess] = []

    def start(url: str, name: str, *extra: str) -> BotProcess:
        bot = BotProcess(url, name, tmp_path, *extra)  # ttl 3 s: a dead bot disappears quickly
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.close()


async def eventually(check, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Async twin of :func:`wait_for`: await ``check()`` until truthy, or fail after ``timeout`` seconds."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(interval)


@pytest.fixture
async def js(provisioned: EmbeddedServer):
    """A JetStream context on the provisioned server (closed at teardown)."""
    import nats

    nc = await nats.connect(provisioned.url)
    yield nc.jetstream()
    await nc.close()
