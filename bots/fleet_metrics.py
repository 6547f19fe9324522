"""Prometheus metrics for one fleet supervisor (``corral fleet --metrics-port``).

A private registry, so the endpoint shows the fleet's series and the process
collector's, and nothing a library registered globally. Values are refreshed
from the supervisor's own report (:class:`corral.core.fleet.SupervisorBeat`) each
time it heartbeats, and counters on every unexpected exit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, start_http_server

from corral.core.fleet import SupervisorBeat
from corral.bots.fleet_slot import SlotExit, SlotState
from corral.core.errors import ConfigError


class FleetMetrics:
    def __init__(self, host: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        labels = ["host"]
        self.desired = Gauge("corral_fleet_desired_bots", "Bots this host should run (desired.<host>)", labels, registry=self.registry)
        self.slots = Gauge("corral_fleet_slots", "Slots by state", [*labels, "state"], registry=self.registry)
        self.crash_loop = Gauge("corral_fleet_crash_loop_slots", "Slots that keep dying (backing off)", labels, registry=self.registry)
        self.connected = Gauge("corral_fleet_connected", "1 while the supervisor reaches NATS", labels, registry=self.registry)
        self.backlog = Gauge("corral_backlog_jobs", "Jobs pending + in flight on a job consumer (KEDA's lag)", ["consumer"],
                             registry=self.registry)
        self.oldest = Gauge("corral_backlog_oldest_seconds", "Age of the oldest unfinished job on a job consumer", ["consumer"],
                            registry=self.registry)
        self.exits = Counter("corral_fleet_unexpected_exits", "Bot exits nobody asked for, by kind", [*labels, "kind"],
                             registry=self.registry)
        self.host = host

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Start the HTTP endpoint in a daemon thread (``/metrics``).

        Raises:
            ConfigError: the address does not resolve or the port cannot be bound.
        """
        try:
            start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from e

    def observe(self, beat: SupervisorBeat) -> None:
        self.desired.labels(self.host).set(beat.desired)
        self.crash_loop.labels(self.host).set(len(beat.crash_loop))
        self.connected.labels(self.host).set(1 if beat.connected else 0)
        for state in SlotState:
            self.slots.labels(self.host, state.value).set(sum(1 for s in beat.slots if s.state == state))

    def exited(self, ex: SlotExit) -> None:
        kind = "hung" if ex.hung else "crash_loop" if ex.crash_loop else "exited"
        self.exits.labels(self.host, kind).inc()
