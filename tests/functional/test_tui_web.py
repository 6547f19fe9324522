"""`corral tui --web`: the dashboard served to a browser (textual-serve), read over its websocket."""

from __future__ import annotations

import subprocess
import time

import pytest

from corral.core.spawn import corral_argv
from corral.harness.server import free_port

pytestmark = pytest.mark.anyio


async def test_the_web_dashboard_renders_live_bot_data_over_its_websocket(provisioned, bots):
    """Given a running bot and `corral tui --web`, when a client opens the page's websocket and presses 2, then the
    terminal frames it receives show the bot by name and its state."""
    aiohttp = pytest.importorskip("aiohttp")
    pytest.importorskip("textual_serve")
    bots(provisioned.url, "webbot")
    port = free_port()
    proc = subprocess.Popen(corral_argv("tui", "--web", "--port", str(port), "--server", provisioned.url),  # noqa: ASYNC220 - started once, before any await
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:  # the server is up once the page answers
                try:
                    async with http.get(f"http://127.0.0.1:{port}/") as page:
                        if page.status == 200 and "corral" in await page.text():
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "the web dashboard did not come up"
                await _pause()
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws?width=120&height=40") as ws:
                seen, pressed = "", False
                deadline = time.monotonic() + 60
                while not ("webbot" in seen and "ready" in seen):
                    assert time.monotonic() < deadline, f"no frame showed the bot: {seen[-400:]!r}"
                    msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.1))
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen += msg.data.decode("utf-8", "replace")
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        seen += msg.data
                    if not pressed and ("Overview" in seen or "overview" in seen):
                        await ws.send_json(["stdin", "2"])
                        pressed = True
    finally:
        proc.terminate()
        proc.wait(15)


async def _pause() -> None:
    import anyio
    await anyio.sleep(0.1)  # polling the port, not waiting for an event: there is none to wait for
