"""`corral up`: the whole system on the embedded default, in one command.

Starts nats-server with nats.conf (store under ``--data``), provisions every
resource, starts ``--bots`` bot processes, then opens the dashboard when one
is available and the terminal is interactive (otherwise it prints a status
line every few seconds). Ctrl-C or SIGTERM stops everything in order: bots
drain first, then the server.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

from core.cli.common import positive_int, run
from core.connect import connect
from core.log import get_logger
from core.server import EmbeddedServer
from core.settings import Settings
from core.status import snapshot
from streams import load_declarations
from streams.provision import Action, provision


def register(sub) -> None:
    p = sub.add_parser("up", help="start nats-server, provision, start bots and the dashboard (the embedded default)")
    p.add_argument("--home", type=Path, default=Path("."), help="folder whose data/ holds the JetStream store and logs (default: here)")
    p.add_argument("--port", type=int, default=4222)
    p.add_argument("--http-port", type=int, default=8222)
    p.add_argument("--bots", type=positive_int, default=3, help="bot processes to start (default 3)")
    p.add_argument("--no-tui", action="store_true", help="do not open the dashboard; print status lines instead")
    p.set_defaults(func=cmd)


def start_bots(url: str, count: int, logs: Path) -> list[subprocess.Popen]:
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(1, count + 1):
        out = open(logs / f"bot-{i}.log", "ab")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "core.cli", "bot", "--server", url, "--name", f"local-{i}", "--outbox", str(logs.parent / "outbox" / f"local-{i}")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ))
        out.close()
    return procs


def stop_bots(procs: list[subprocess.Popen], timeout: float = 35.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()


async def _provision(url: str) -> None:
    nc = await connect(Settings(servers=(url,)), get_logger("up"))
    try:
        for report in await provision(nc, load_declarations()):
            print(report.line(), file=sys.stderr)
            if report.action == Action.CONFLICT:
                print("warning: a live resource differs from streams/ and was left as it is", file=sys.stderr)
    finally:
        await nc.close()


async def _status_lines(url: str) -> None:
    nc = await connect(Settings(servers=(url,)), get_logger("up"))
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                async def wait_signal() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                tg.start_soon(wait_signal)
                while True:
                    snap = await snapshot(nc.jetstream())
                    backlog = sum(c.pending for c in snap.consumers)
                    inflight = sum(c.in_flight for c in snap.consumers)
                    results = next((s.messages for s in snap.streams if s.name == "CORRAL_RESULTS"), 0)
                    dead = next((s.messages for s in snap.streams if s.name == "CORRAL_DLQ"), 0)
                    print(f"bots={len(snap.bots)} pending={backlog} in_flight={inflight} results={results} dead={dead}", file=sys.stderr, flush=True)
                    await anyio.sleep(5)
    finally:
        await nc.close()


def _dashboard_available() -> bool:
    try:
        import tui.app  # noqa: F401
    except ImportError:
        return False
    return True


def cmd(args: argparse.Namespace) -> int:
    data = args.home.resolve() / "data"
    server = EmbeddedServer(args.home.resolve(), port=args.port, http_port=args.http_port, log_file=data / "logs" / "nats-server.log")
    print(f"starting nats-server on {server.url} (monitoring {server.monitor_url}, store {server.store_dir})", file=sys.stderr)
    server.start()
    bots: list[subprocess.Popen] = []
    try:
        run(_provision, server.url)
        bots = start_bots(server.url, args.bots, data / "logs")
        print(f"started {len(bots)} bots (logs in {data / 'logs'}); try: corral submit sum a=1 b=2", file=sys.stderr)
        if not args.no_tui and sys.stdin.isatty() and sys.stdout.isatty() and _dashboard_available():
            from tui.app import run_dashboard

            run_dashboard(Settings(servers=(server.url,)), monitor_url=server.monitor_url)
        else:
            run(_status_lines, server.url)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping: draining bots, then the server", file=sys.stderr)
        stop_bots(bots)
        server.stop()
    return 0
