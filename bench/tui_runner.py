"""The real dashboard, headless, in its own process: ``python -m corral.bench.tui_runner URL [--seconds S] [--bots B]``.

Runs :class:`corral.tui.app.CorralApp` under Textual's ``run_test`` (no terminal),
waits until it is connected and (with ``--bots``) shows that many live bots,
then presses every screen key (1..7, those bound) in turn for ``--seconds``.
A thread samples this process's RSS every 50 ms. Prints one JSON line:
``peak_rss_mb``, ``rss_after_mb``, ``max_pause_ms`` (the slowest
``pilot.pause()`` round trip after a key press: how long the app took to
process the key and everything queued before it), ``p50_pause_ms``,
``visits``, ``seen_bots`` and ``ready_s`` (start to all bots shown).
On failure prints ``{"error": ...}`` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import psutil

MB = 1024 * 1024
SAMPLE_EVERY = 0.05
SIZE = (120, 40)


class RssSampler:
    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def drive(url: str, seconds: float, bots: int, ready_timeout: float) -> dict[str, float]:
    from textual.binding import Binding

    from corral.core.settings import Settings
    from corral.tui.app import CorralApp

    app = CorralApp(Settings(servers=(url,)), actor="bench@bench")
    keys = [b.key for b in app.BINDINGS if isinstance(b, Binding) and b.key in "1234567"]
    pauses: list[float] = []
    t0 = time.monotonic()
    async with app.run_test(size=SIZE) as pilot:
        deadline = t0 + ready_timeout
        while not (app.store.connected and app.store.snapshot is not None
                   and sum(1 for r in app.store.bots.values() if r.gone_at is None) >= bots):
            if time.monotonic() > deadline:
                raise TimeoutError(f"dashboard shows {len(app.store.bots)} of {bots} bots after {ready_timeout}s")
            await pilot.pause(0.1)
        ready_s = time.monotonic() - t0
        visits, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            for key in keys:
                await pilot.press(key)
                t = time.perf_counter()
                await pilot.pause()
                pauses.append(time.perf_counter() - t)
                visits += 1
                await pilot.pause(max(0.05, seconds / (len(keys) * 4)))  # let the clock tick redraw it
        seen = sum(1 for r in app.store.bots.values() if r.gone_at is None)
    return {"max_pause_ms": 1000 * max(pauses), "p50_pause_ms": 1000 * statistics.median(pauses), "visits": visits,
            "seen_bots": seen, "ready_s": ready_s, "screens": len(keys)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m corral.bench.tui_runner")
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--bots", type=int, default=0, help="wait until the dashboard shows this many live bots")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    import anyio

    try:
        with RssSampler() as rss:
            out = anyio.run(drive, args.url, args.seconds, args.bots, args.ready_timeout)
            out["rss_after_mb"] = rss.proc.memory_info().rss / MB
        out["peak_rss_mb"] = rss.peak / MB
    except Exception as e:  # noqa: BLE001 - the process boundary: reported to the parent
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
