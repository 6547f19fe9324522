"""`corral tui --web` in a real headless Chromium: the page's terminal shows live data and takes keys.

xterm.js in the page draws on a canvas, so the text is read from the terminal's
own buffer (what it draws from) through the DevTools protocol. The page keeps
its terminal in a closure; a script run before the page's own captures it as
it is assigned. Chromium and textual-serve are optional locally (the test
skips with the reason) and required under CI (``CI`` set: it fails instead);
.ci/run installs Chromium.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from corral.core.spawn import corral_argv
from corral.harness.server import free_port

pytestmark = pytest.mark.anyio

#: Runs before the page's scripts: keeps the xterm.js Terminal the page assigns to ``this.terminal``.
CAPTURE_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  get() { return undefined; },
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && typeof value.onData === "function") window.__corralTerminal = value;
  },
});
"""
#: The terminal's visible rows as text, or null before the page has made its terminal.
SCREEN_TEXT = """(() => {
  const t = window.__corralTerminal;
  if (!t) return null;
  const b = t.buffer.active, rows = [];
  for (let i = 0; i < t.rows; i++) { const line = b.getLine(b.viewportY + i); rows.push(line ? line.translateToString(true) : ""); }
  return rows.join("\\n");
})()"""
#: The page marks its body once the first frame arrived; the terminal draws on a canvas (WebGL or 2D).
DRAWN = "document.body.classList.contains('-first-byte') && !!document.querySelector('.xterm-screen canvas')"


def required(what: str, present: object) -> None:
    """Skip without ``what`` locally; under CI its absence is a failure (.ci/run provides it)."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI (CI is set; .ci/run installs it)")
    pytest.skip(f"{what} is not installed")


def textual_serve_installed() -> bool:
    try:
        import textual_serve.server  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


@pytest.fixture
def web_dashboard(provisioned):
    """`corral tui --web` on a free loopback port against the test's server; yields its URL."""
    required("textual-serve (pip install 'corral[web]')", textual_serve_installed())
    port = free_port()
    proc = subprocess.Popen(corral_argv("tui", "--web", "--port", str(port), "--server", provisioned.url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}/", proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def page_answers(url: str, proc: subprocess.Popen, within: float = 30) -> None:
    import aiohttp
    import anyio

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as page:
                    if page.status == 200 and "textual-terminal" in await page.text():
                        return
            except aiohttp.ClientError:
                pass
            assert proc.poll() is None, f"`corral tui --web` exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{url} did not answer within {within}s"
            await anyio.sleep(0.1)  # polling a port: there is no event to wait on


async def screen_shows(page, *words: str, within: float = 60) -> str:
    """Poll the page's terminal until every word is on screen; returns the screen."""
    import anyio

    deadline, text = time.monotonic() + within, ""
    while True:
        text = await page.evaluate(SCREEN_TEXT) or ""
        if all(w in text for w in words):
            return text
        assert time.monotonic() < deadline, f"the browser's screen never showed {words}; it shows:\n{text}"
        await anyio.sleep(0.2)  # polling the page: the terminal has no change event we can await


async def test_the_web_dashboard_renders_live_bot_data_in_headless_chromium(provisioned, bots, web_dashboard, tmp_path: Path):
    """Given a running bot and `corral tui --web`, when headless Chromium opens the page and 2 is typed, then its
    terminal shows the bots screen with the bot by name and `ready`."""
    from tests.functional.browser import Chromium, find_chromium

    binary = find_chromium()
    required("chromium (apt-get install chromium)", binary)
    assert binary is not None
    url, proc = web_dashboard
    bots(provisioned.url, "webbot")
    await page_answers(url, proc)
    async with Chromium(binary, tmp_path) as page:
        await page.open(url, before_load=CAPTURE_TERMINAL)
        await screen_shows(page, "corral — overview", "ready: 1")  # the bot's heartbeat counted: live data
        assert await page.evaluate(DRAWN), "the page received frames but drew no terminal canvas"
        await page.evaluate("window.__corralTerminal.focus()")
        await page.type_key("2")
        screen = await screen_shows(page, "corral — bots", "webbot")
        assert any("webbot" in row and "ready" in row for row in screen.splitlines()), screen
