"""Three nats-server nodes on loopback from cluster/n1..n3.conf, for the cluster chaos suite.

Each node runs in its own folder (the configs' store path is relative to the
working directory) with free ports passed on the command line (-p, -m,
--cluster and --routes override the file), so a run never collides with a
cluster someone started from cluster/. A killed node restarts on its own
store and ports, as a crashed host would.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import nats.errors
import nats.js.errors

from corral.core.connect import TRANSIENT
from corral.core.errors import TransportError
from corral.harness.server import CLUSTER_CONF, EmbeddedServer, free_port

NODES = ("n1", "n2", "n3")


class LocalCluster:
    """The three nodes by server name. ``start()`` returns once every node sees a meta leader."""

    def __init__(self, home: Path) -> None:
        route_ports = [free_port() for _ in NODES]
        routes = ",".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.nodes = {
            name: EmbeddedServer(home / name, config=CLUSTER_CONF / f"{name}.conf",
                                 extra=["--cluster", f"nats://127.0.0.1:{port}", "--routes", routes])
            for name, port in zip(NODES, route_ports, strict=True)
        }

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes.values()]

    def start(self, timeout: float = 60.0) -> LocalCluster:
        for node in self.nodes.values():
            node.start()
        for name in NODES:
            self.wait_healthy(name, timeout)
        return self

    def wait_healthy(self, name: str, timeout: float = 60.0) -> float:
        """Seconds until ``name``'s /healthz is ok (it has caught up with the meta leader).

        Raises:
            TransportError: not healthy within ``timeout``.
        """
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if healthy(self.nodes[name]):
                return time.monotonic() - start
            time.sleep(0.1)
        raise TransportError(f"cluster node {name} not healthy after {timeout}s; see {self.nodes[name].log_file}")

    def kill(self, name: str) -> None:
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        """Start a killed node again on its store and ports."""
        self.nodes[name].start()

    def close(self) -> None:
        for node in self.nodes.values():
            node.resume()
            node.kill()


def healthy(node: EmbeddedServer) -> bool:
    """True once /healthz is ok: this node sees a JetStream meta leader and its assets are current."""
    try:
        with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=1) as r:
            return json.load(r).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def stream_leader(js, stream: str) -> str | None:
    """The server name leading ``stream`` (``$JS.API.STREAM.INFO``'s cluster.leader); None mid-election."""
    try:
        info = await js.stream_info(stream)
    except (nats.errors.Error, nats.js.errors.Error, *TRANSIENT):
        return None
    return info.cluster.leader if info.cluster else None
