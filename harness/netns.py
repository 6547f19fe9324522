"""Three hosts on a real network: Linux network namespaces joined by a bridge, one cluster node each.

Topology (names carry a per-run tag, so concurrent runs never share an interface):

    <tag>-h1   <tag>-h2   <tag>-h3        one namespace per host: its own loopback, its own
       | veth     | veth     | veth       address 10.X.Y.<i>, a nats-server and a supervisor
       +------ bridge in <tag>-sw ------+
                  | veth
           this process (10.X.Y.254)      the test observes and submits from outside the hosts

A host's node runs cluster/n<i>.conf with every loopback address replaced by
the host's own, which is how the three files are meant to be used on three
machines. ``partition(i)`` sets the bridge's end of host i's link down: the
host keeps its processes and its store but reaches nobody, and nobody reaches
it. ``heal(i)`` sets it up again. Needs root (``ip netns``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

from corral.core.errors import ConfigError
from corral.harness.server import CLUSTER_CONF, EmbeddedServer

HOSTS = (1, 2, 3)
OBSERVER = 254


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root for `ip netns`"
    if not shutil.which("ip"):
        return "the `ip` command (iproute2) is not installed"
    probe = f"crprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except ConfigError as e:
        return f"`ip netns add` does not work here: {e}"
    _ip("netns", "del", probe, check=False)
    return None


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ConfigError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _free_subnet() -> str:
    """A 10.X.Y.0/24 prefix no route on this machine uses (another run may hold one)."""
    used = _ip("route", "show")
    for _ in range(100):
        prefix = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}"
        if f"{prefix}." not in used:
            return prefix
    raise ConfigError("no free 10.x.y.0/24 subnet for the namespaces")


class Network:
    """The namespaces and links; ``close()`` removes them all (call it in a finally)."""

    def __init__(self) -> None:
        self.tag = f"cr{os.getpid() % 10000:04d}{random.randint(0, 0xff):02x}"
        self.prefix = _free_subnet()
        self.created: list[str] = []

    def ns(self, host: int | str) -> str:
        return f"{self.tag}-{'h' if isinstance(host, int) else ''}{host}"

    def addr(self, host: int) -> str:
        return f"{self.prefix}.{host}"

    def _switch_end(self, host: int | str) -> str:
        return f"v{self.tag[2:]}s{host}"

    def up(self) -> Network:
        sw = self.ns("sw")
        for name in (sw, *(self.ns(h) for h in HOSTS)):
            _ip("netns", "add", name)
            self.created.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for h in HOSTS:
            inner = f"v{self.tag[2:]}h{h}"
            _ip("link", "add", inner, "netns", self.ns(h), "type", "veth", "peer", "name", self._switch_end(h), "netns", sw)
            _ip("-n", self.ns(h), "addr", "add", f"{self.addr(h)}/24", "dev", inner)
            _ip("-n", self.ns(h), "link", "set", inner, "up")
            self._attach(h)
        self.root_end = f"v{self.tag[2:]}r"
        _ip("link", "add", self.root_end, "type", "veth", "peer", "name", self._switch_end("r"), "netns", sw)
        _ip("addr", "add", f"{self.addr(OBSERVER)}/24", "dev", self.root_end)
        _ip("link", "set", self.root_end, "up")
        self._attach("r")
        return self

    def _attach(self, host: int | str) -> None:
        _ip("-n", self.ns("sw"), "link", "set", self._switch_end(host), "master", "br0", "up")

    def partition(self, host: int) -> None:
        """Drop host's link: it is cut off from the other two hosts and from this process."""
        _ip("-n", self.ns("sw"), "link", "set", self._switch_end(host), "down")

    def heal(self, host: int) -> None:
        _ip("-n", self.ns("sw"), "link", "set", self._switch_end(host), "up")

    def exec_prefix(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def close(self) -> None:
        """Delete every namespace (their veth ends, and the peers, go with them)."""
        if getattr(self, "root_end", None):
            _ip("link", "del", self.root_end, check=False)
        for name in reversed(self.created):
            _ip("netns", "del", name, check=False)
        self.created.clear()


def _conf_port(text: str, key: str, conf: Path) -> int:
    """The port of the first top-level ``key: address:port`` line of a server config."""
    m = re.search(rf"^{key}:\s*[\d.]+:(\d+)", text, re.M)
    if m is None:
        raise ConfigError(f"{conf} has no top-level `{key}: address:port` line")
    return int(m.group(1))


class HostServer(EmbeddedServer):
    """Host i's cluster node, inside its namespace, on the host's address with the file's ports."""

    def __init__(self, net: Network, host: int, home: Path) -> None:
        text = (CLUSTER_CONF / f"n{host}.conf").read_text()
        conf = home / f"n{host}.conf"
        home.mkdir(parents=True, exist_ok=True)
        # Every 127.0.0.1 in the file becomes a host's own address: n<j>'s route entry is host j's.
        for j in HOSTS:
            text = re.sub(rf"127\.0\.0\.1:(1\d{{3}}{j})\b", rf"{net.addr(j)}:\1", text)
        conf.write_text(text)
        # The first listen is the client port; the cluster block's comes later.
        port, http = _conf_port(text, "listen", conf), _conf_port(text, "http", conf)
        super().__init__(home, port=port, http_port=http, config=conf)
        self.net, self.host = net, host

    @property
    def url(self) -> str:
        return f"nats://{self.net.addr(self.host)}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.net.addr(self.host)}:{self.http_port}"

    def command(self) -> list[str]:
        # The file alone: its addresses are the host's now, and its ports are free in a namespace.
        return [*self.net.exec_prefix(self.host), *super().command()[:3]]
