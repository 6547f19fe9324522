"""What a corral process loads: nats-py without aiohttp until a websocket server is asked for."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def test_importing_the_bot_command_loads_no_aiohttp_textual_or_duckdb():
    """Given a fresh interpreter, when it imports corral's CLI and bot, then aiohttp, textual and duckdb are not loaded."""
    out = _run("import sys, corral.cli, corral.bots.bot; print(sorted(m for m in ('aiohttp', 'textual', 'duckdb') if m in sys.modules))")
    assert out == "[]"


def test_a_websocket_server_brings_aiohttp_back_for_nats():
    """Given corral imported (aiohttp hidden from nats-py), when websockets() is called, then nats-py's transport has aiohttp."""
    out = _run("import corral, nats.aio.transport as t; a = t.aiohttp is None; "
               "from corral.core.lean_nats import websockets; websockets(); print(a, t.aiohttp is not None)")
    assert out == "True True"
