"""`corral cluster`: the 3-node JetStream cluster of cluster/*.conf on this machine, provisioned R3."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import urllib.request
from pathlib import Path

from corral.cli.common import run
from corral.core.errors import TransportError
from corral.core.log import get_logger
from corral.harness.server import CLUSTER_CONF, EmbeddedServer
from corral.core.settings import Settings
from corral.streams import load_declarations
from corral.streams.provision import provision_url

#: (config, client port, monitoring port) as written in cluster/n*.conf
NODES = (("n1.conf", 15221, 18221), ("n2.conf", 15222, 18222), ("n3.conf", 15223, 18223))


def register(sub) -> None:
    p = sub.add_parser("cluster", help="start the 3-node cluster from cluster/*.conf, provision R3, wait for Ctrl-C")
    p.add_argument("--home", type=Path, default=Path("."), help="folder whose data/cluster/ holds the three stores (default: here)")
    p.set_defaults(func=cmd)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return b'"ok"' in r.read()
    except OSError:
        return False


async def _provision(urls: str) -> None:
    decls = [d.replicated(3) for d in load_declarations()]
    for report in await provision_url(Settings.from_env(server=urls), decls, wait=True, log=get_logger("cluster")):
        print(report.line(), file=sys.stderr)


def cmd(args: argparse.Namespace) -> int:
    home = args.home.resolve()
    servers = [EmbeddedServer(home, port=port, http_port=http, config=CLUSTER_CONF / conf,
                              log_file=home / "data" / "logs" / f"cluster-{conf[:2]}.log") for conf, port, http in NODES]
    try:
        for s in servers:
            s.start()
        deadline = time.monotonic() + 30
        print("waiting for a JetStream meta leader (2 of 3 nodes)...", file=sys.stderr)
        while not healthy(NODES[0][2]):
            if time.monotonic() > deadline:
                raise TransportError("the cluster elected no meta leader in 30 s; see data/logs/cluster-n*.log")
            time.sleep(0.2)
        urls = ",".join(s.url for s in servers)
        run(_provision, urls)
        print(f"cluster up: export CORRAL_NATS_URL={urls}", file=sys.stderr)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        print("stopping the cluster", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers:
            s.stop()
    return 0
