"""A bot's HTTP endpoint: Prometheus metrics, liveness and readiness (``corral bot --metrics-port``).

* ``/metrics``: jobs by kind and outcome, handler duration histogram, in flight,
  state, reconnects, circuit breaker, outbox backlog (prometheus-client, a
  private registry plus the process collector).
* ``/healthz`` (liveness): 200 while the bot's event loop is turning (a tick
  within the last 15 s). A wedged loop answers 503, so a kubelet restarts it.
  Being disconnected from NATS is *not* a liveness failure: restarting would
  not bring the server back.
* ``/readyz`` (readiness): 200 only when the bot can take work right now:
  connected, its consumer answered recently, not draining, state ready or
  processing. 503 with the reason otherwise.

The server runs in a daemon thread (wsgiref), reading state the bot updates;
it never touches NATS itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, make_wsgi_app

from corral.bots.state import BotState

Check = Callable[[], tuple[bool, str]]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes every few seconds must not flood the bot's log
        pass


class BotMetrics:
    def __init__(self, bot: str) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.jobs = Counter("corral_bot_jobs", "Jobs ended by this bot, by kind and outcome (throttled: a delivery a limit refused)",
                            ["kind", "outcome"], registry=r)
        self.duration = Histogram(
            "corral_bot_handler_seconds", "Handler run time of succeeded jobs", ["kind"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.in_flight = Gauge("corral_bot_in_flight", "Jobs running on this bot", registry=r)
        self.state = Gauge("corral_bot_state", "1 for the bot's current state", ["state"], registry=r)
        self.reconnects = Counter("corral_bot_reconnects", "Reconnections to NATS", registry=r)
        self.breaker_open = Gauge("corral_bot_circuit_open", "1 while the breaker stops claiming (server unreachable)", registry=r)
        self.outbox = Gauge("corral_bot_outbox_entries", "Results and events waiting on disk for the server", registry=r)
        self.last_tick = time.monotonic()
        # labels() validates and locks on every call; a job's outcome is counted per job, so the
        # labelled children are looked up once per (kind, outcome).
        self._counts: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def count(self, outcome: str, kind: str, seconds: float | None = None) -> None:
        counter = self._counts.get((kind, outcome))
        if counter is None:
            counter = self._counts[(kind, outcome)] = self.jobs.labels(kind, outcome)
        counter.inc()
        if seconds is not None:
            histogram = self._durations.get(kind)
            if histogram is None:
                histogram = self._durations[kind] = self.duration.labels(kind)
            histogram.observe(seconds)

    def set_state(self, state: BotState) -> None:
        for s in BotState:
            self.state.labels(s.value).set(1 if s == state else 0)
        self.breaker_open.set(1 if state == BotState.ERROR else 0)

    def serve(self, port: int, addr: str, ready: Check) -> int:
        """Start the endpoint in a daemon thread; returns the bound port (0 picks a free one)."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                age = time.monotonic() - self.last_tick
                ok, why = age < 15, f"event loop last turned {age:.1f}s ago"
            elif path == "/readyz":
                ok, why = ready()
            else:
                return metrics_app(environ, start_response)
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [(("ok: " if ok else "not ok: ") + why + "\n").encode()]

        server = make_server(addr, port, app, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, name="corral-metrics", daemon=True).start()
        return server.server_port
