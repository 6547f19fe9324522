"""`corral up`: the whole system on the embedded default, in one command.

Starts nats-server with nats.conf (store under ``--home``/data), provisions
every resource, starts a fleet supervisor (host ``local``) that keeps ``--bots``
bot processes running and the analytics ledger (``data/ledger.duckdb``), then
opens the dashboard when one
is available and the terminal is interactive (otherwise it prints a status
line every few seconds). Ctrl-C or SIGTERM stops everything in order: bots
drain first, then the server.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import anyio

from corral.core import schedules
from corral.cli.common import positive_int, run
from corral.core.connect import connect
from corral.core.log import get_logger
from corral.core.messages import make_job
from corral.harness.server import EmbeddedServer
from corral.harness.stack import start_fleet, start_ledger, stop
from corral.core.settings import Settings
from corral.core.status import snapshot
from corral.streams.provision import Action, provision_url


def register(sub) -> None:
    p = sub.add_parser("up", help="start nats-server, provision, start bots and the dashboard (the embedded default)")
    p.add_argument("--home", type=Path, default=Path("."), help="folder whose data/ holds the JetStream store and logs (default: here)")
    p.add_argument("--port", type=int, default=4222)
    p.add_argument("--http-port", type=int, default=8222)
    p.add_argument("--bots", type=int, default=3, help="bots the local fleet supervisor keeps running (default 3)")
    p.add_argument("--no-tui", action="store_true", help="do not open the dashboard; print status lines instead")
    p.add_argument("--populate-every", default="10m", metavar="PERIOD",
                   help="the seed's automatic population: a `populate` schedule submitting --populate-count sum jobs "
                   "every PERIOD (default 10m; 'off' removes it)")
    p.add_argument("--populate-count", type=positive_int, default=100, metavar="N")
    p.set_defaults(func=cmd)


POPULATE_SCHEDULE = "populate"


async def _provision(url: str, populate_every: str = "off", populate_count: int = 100) -> None:
    for report in await provision_url(url, wait=True, log=get_logger("up")):
        print(report.line(), file=sys.stderr)
        if report.action == Action.CONFLICT:
            print("warning: a live resource differs from streams/ and was left as it is", file=sys.stderr)
    nc = await connect(Settings(servers=(url,)), get_logger("up"))
    try:
        await _populate_schedule(nc.jetstream(), populate_every, populate_count)
    finally:
        await nc.close()


async def _populate_schedule(js, every: str, count: int) -> None:
    """The seed's population as a server message schedule: one `populate` job per period, fleet-wide once."""
    if every == "off":
        if any(s.name == POPULATE_SCHEDULE for s in await schedules.list_schedules(js)):
            await schedules.remove(js, POPULATE_SCHEDULE)
            print(f"removed schedule {POPULATE_SCHEDULE}", file=sys.stderr)
        return
    job = make_job("populate", {"kind": "sum", "count": count}, id=POPULATE_SCHEDULE)
    s = await schedules.add(js, POPULATE_SCHEDULE, job, f"@every {every}")
    print(f"schedule {s.name}: {count} sum jobs {s.spec} (`corral schedule rm {s.name}` or --populate-every off stops it)", file=sys.stderr)


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
        import corral.tui.app  # noqa: F401
    except ImportError:
        return False
    return True


def cmd(args: argparse.Namespace) -> int:
    data = args.home.resolve() / "data"
    server = EmbeddedServer(args.home.resolve(), port=args.port, http_port=args.http_port, log_file=data / "logs" / "nats-server.log")
    print(f"starting nats-server on {server.url} (monitoring {server.monitor_url}, store {server.store_dir})", file=sys.stderr)
    server.start()
    fleet = ledger = None
    try:
        run(_provision, server.url, args.populate_every, args.populate_count)
        fleet = start_fleet(server.url, args.bots, data / "logs")
        ledger = start_ledger(server.url, data)
        print(f"started a fleet supervisor keeping {args.bots} bots (scale: `corral scale N --host local` or key 6 in "
              f"the dashboard; logs in {data / 'logs'}); try: corral submit sum a=1 b=2", file=sys.stderr)
        print("started the ledger (data/ledger.duckdb); try: corral report rates-by-kind, "
              "corral query \"SELECT kind, count(*) FROM results GROUP BY kind\"", file=sys.stderr)
        if not args.no_tui and sys.stdin.isatty() and sys.stdout.isatty() and _dashboard_available():
            from corral.tui.app import run_dashboard

            run_dashboard(Settings(servers=(server.url,)), monitor_url=server.monitor_url)
        else:
            run(_status_lines, server.url)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping: draining bots, then the server", file=sys.stderr)
        stop(fleet)
        stop(ledger, timeout=15)  # the same SIGTERM-then-wait: it finishes its batch and closes DuckDB
        server.stop()
    return 0
