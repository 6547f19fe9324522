"""A real headless Chromium driven over the DevTools protocol, for the browser tests (`corral tui --web`).

Only what those tests need: open a page, evaluate JavaScript in it, type keys.
The protocol is JSON over a websocket: a command is ``{"id", "method",
"params"}`` and its answer the message with the same ``id``; everything else
on the socket is an event, which nothing here needs. Chromium picks its own
debugging port (``--remote-debugging-port=0``) and writes it to
``DevToolsActivePort`` in the profile folder, so two tests never race for one.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio

#: Where a browser is looked for: Debian's package first, then whatever PATH offers.
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium binary, or None when there is none on this machine."""
    for name in CANDIDATES:
        if (path := shutil.which(name)) and os.access(path, os.X_OK):
            return path
    return None


class BrowserError(RuntimeError):
    """The browser did not start, or a DevTools command failed."""


class Chromium:
    """``async with Chromium(binary, folder) as page:`` one headless browser and its only tab."""

    def __init__(self, binary: str, folder: Path, *, start_within: float = 30.0) -> None:
        self.binary, self.profile, self.start_within = binary, folder / "chromium-profile", start_within
        self.log_path = folder / "chromium.log"
        self.proc: subprocess.Popen | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    def _start(self) -> None:
        self.profile.mkdir(parents=True, exist_ok=True)
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        argv = [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--window-size=1400,1000",
                "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"]
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    async def __aenter__(self) -> Chromium:
        self._start()
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(await self._page_socket(), max_msg_size=0)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            if self._ws is not None:
                await self._ws.close()
            if self._http is not None:
                await self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)

    def log(self) -> str:
        """Chromium's own stderr so far (for a failure message)."""
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    async def _page_socket(self) -> str:
        """The tab's DevTools websocket URL, once Chromium has written its port and opened the tab."""
        assert self._http is not None and self.proc is not None
        deadline = time.monotonic() + self.start_within
        port_file = self.profile / "DevToolsActivePort"
        while True:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {self.log()}")
            if port_file.exists() and (lines := port_file.read_text().split()):
                try:
                    async with self._http.get(f"http://127.0.0.1:{lines[0]}/json/list") as resp:
                        pages = [t for t in await resp.json() if t.get("type") == "page"]
                    if pages:
                        return pages[0]["webSocketDebuggerUrl"]
                except (aiohttp.ClientError, ValueError):
                    pass  # the port file can precede the listener by a moment
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium's DevTools did not come up within {self.start_within}s: {self.log()}")
            await anyio.sleep(0.1)  # polling for a file and a port: there is no event to wait on

    async def send(self, method: str, **params: Any) -> dict:
        """Run one DevTools command and return its result (events arriving meanwhile are skipped)."""
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        with anyio.fail_after(30):
            while True:
                msg = await self._ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise BrowserError(f"DevTools socket closed during {method}: {msg.type!r}")
                answer = json.loads(msg.data)
                if answer.get("id") == ident:
                    if "error" in answer:
                        raise BrowserError(f"{method}: {answer['error']}")
                    return answer.get("result", {})

    async def open(self, url: str, *, before_load: str = "") -> None:
        """Navigate the tab to ``url``; ``before_load`` runs in the page before any of its own scripts."""
        await self.send("Page.enable")
        if before_load:
            await self.send("Page.addScriptToEvaluateOnNewDocument", source=before_load)
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    async def type_key(self, char: str) -> None:
        """One printable key pressed and released, as a keyboard would send it to the focused element."""
        code = f"Digit{char}" if char.isdigit() else f"Key{char.upper()}"
        key = {"key": char, "code": code, "windowsVirtualKeyCode": ord(char.upper())}
        await self.send("Input.dispatchKeyEvent", type="keyDown", text=char, **key)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **key)
