"""Make the README's dashboard screenshot: ``python -m corral.tui.screenshot docs/tui-overview.svg``.

Starts a throwaway nats-server and three bots, submits a mix of jobs (some
fail for good), lets the dashboard watch them for a few seconds, and saves the
overview as SVG with ``App.save_screenshot``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio

from corral.core.errors import TransportError
from corral.core.messages import make_job
from corral.harness.server import EmbeddedServer
from corral.harness.stack import start_fleet, stop
from corral.core.settings import Settings
from corral.core.submit import submit_many
from corral.streams.provision import provision_url
from corral.tui.app import CorralApp

WATCH_SECONDS = 8.0


async def shoot(url: str, monitor_url: str, out: Path) -> None:
    app = CorralApp(Settings(servers=(url,)), monitor_url)
    async with app.run_test(size=(150, 44)) as pilot:
        deadline = time.monotonic() + 20
        while len([b for b in app.store.bots.values() if b.gone_at is None]) < 3 and time.monotonic() < deadline:
            await pilot.pause(0.1)
        js = app.js
        if js is None:
            raise TransportError(f"the dashboard did not connect to {url} within 20 s")
        await submit_many(js, [make_job("sleep", {"seconds": 30}) for _ in range(2)])
        for wave in range(int(WATCH_SECONDS * 2)):  # a steady trickle draws a sparkline, not one spike
            jobs = [make_job("sum", {"a": i, "b": wave}) for i in range(10 + 3 * wave)]
            if wave % 4 == 1:
                jobs.append(make_job("fail", {"message": "upstream 503"}, max_attempts=1))
            await submit_many(js, jobs)
            await pilot.pause(0.5)
        app.save_screenshot(out.name, str(out.parent))


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/tui-overview.svg").resolve()
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home)).start()
        fleet = None
        try:
            anyio.run(provision_url, server.url)
            fleet = start_fleet(server.url, 3, Path(home) / "logs")
            anyio.run(shoot, server.url, server.monitor_url, out)
        finally:
            stop(fleet, timeout=15)
            server.kill()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
