"""`corral up`: the whole system on the embedded default, in one command.

Starts nats-server with nats.conf (store under ``--home``/data), provisions
every resource, starts a fleet supervisor (host ``local``) that keeps ``--bots``
bot processes running and the analytics ledger (``data/ledger.duckdb``), then
opens the dashboard when one
is available and the terminal is interactive (otherwise it prints a status
line every few seconds). Ctrl-C or SIGTERM stops everything in order: bots
drain first, then the server.

``--secure`` runs the same system under nats-secure.conf with nothing
anonymous: fresh passwords for this run (:mod:`corral.harness.secure`), the
supervisor as ``fleet-bot`` of host ``bot`` starting each bot as its own user,
the ledger as ``ledger``, provisioning and the dashboard as ``admin``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import anyio

from corral.core import schedules
from corral.cli.common import positive_int, run
from corral.core.connect import connect
from corral.core.errors import ConfigError
from corral.core.log import get_logger
from corral.core.messages import make_job
from corral.harness.secure import FLEET_HOST, LEDGER_USER, SUPERVISOR_USER, SecureRun
from corral.harness.server import NATS_CONF, SECURE_CONF, EmbeddedServer
from corral.harness.stack import start_fleet, start_ledger, stop
from corral.core.settings import Settings
from corral.core.status import snapshot
from corral.streams import load_declarations
from corral.streams.provision import Action, provision


def register(sub) -> None:
    p = sub.add_parser("up", help="start nats-server, provision, start bots and the dashboard (the embedded default)")
    p.add_argument("--home", type=Path, default=Path("."), help="folder whose data/ holds the JetStream store and logs (default: here)")
    p.add_argument("--port", type=int, default=4222, help="the NATS client port (default 4222)")
    p.add_argument("--http-port", type=int, default=8222, help="the server's HTTP monitoring port (default 8222)")
    p.add_argument("--secure", action="store_true",
                   help="run under nats-secure.conf: per-run passwords, one user per process, nothing anonymous "
                   "(fleet host `bot`; docs/security.md)")
    p.add_argument("--bots", type=int, default=3, help="bots the local fleet supervisor keeps running (default 3)")
    p.add_argument("--no-tui", action="store_true", help="do not open the dashboard; print status lines instead")
    p.add_argument("--populate-every", default="10m", metavar="PERIOD",
                   help="the seed's automatic population: a `populate` schedule submitting --populate-count sum jobs "
                   "every PERIOD (default 10m; 'off' removes it)")
    p.add_argument("--populate-count", type=positive_int, default=100, metavar="N", help="sum jobs per population (default 100)")
    p.set_defaults(func=cmd)


POPULATE_SCHEDULE = "populate"


async def _provision(url: str, populate_every: str = "off", populate_count: int = 100, login: Settings | None = None) -> None:
    nc = await connect(login or Settings(servers=(url,)), get_logger("up"))
    try:
        for report in await provision(nc, load_declarations()):
            print(report.line(), file=sys.stderr)
            if report.action == Action.CONFLICT:
                print("warning: a live resource differs from streams/ and was left as it is", file=sys.stderr)
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


async def _status_lines(login: Settings) -> None:
    nc = await connect(login, get_logger("up"))
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
                    print(f"bots={len(snap.bots)} pending={backlog} in_flight={inflight} results={results} dead={dead}",
                          file=sys.stderr, flush=True)
                    await anyio.sleep(5)
    finally:
        await nc.close()


def _dashboard_available() -> bool:
    try:
        import corral.tui.app  # noqa: F401
    except ImportError:
        return False
    return True


def _secure_run(args: argparse.Namespace) -> SecureRun | None:
    """This run's identities under ``--secure``, or None.

    Raises:
        ConfigError: more bots asked for than the profile has bot users.
    """
    if not args.secure:
        return None
    secure = SecureRun(SECURE_CONF)
    if args.bots > secure.slots:
        secure.close()
        raise ConfigError(f"--bots {args.bots}: nats-secure.conf has users for {secure.slots} bots "
                          f"({FLEET_HOST}-1..{FLEET_HOST}-{secure.slots}); add users there (docs/security.md)")
    return secure


def _start_children(secure: SecureRun | None, url: str, bots: int, data: Path):
    """The supervisor and the ledger, each with its own login when secured."""
    if secure is None:
        return start_fleet(url, bots, data / "logs"), start_ledger(url, data), "local"
    fleet = start_fleet(url, bots, data / "logs", host=FLEET_HOST, env=secure.env(os.environ, SUPERVISOR_USER),
                        extra=("--slot-credentials", str(secure.slot_credentials)))
    return fleet, start_ledger(url, data, env=secure.env(os.environ, LEDGER_USER)), FLEET_HOST


def cmd(args: argparse.Namespace) -> int:
    data = args.home.resolve() / "data"
    secure = _secure_run(args)
    server = EmbeddedServer(args.home.resolve(), port=args.port, http_port=args.http_port, log_file=data / "logs" / "nats-server.log",
                            config=SECURE_CONF if secure else NATS_CONF,
                            env=secure.server_env(os.environ) if secure else None)
    print(f"starting nats-server on {server.url} (monitoring {server.monitor_url}, store {server.store_dir})", file=sys.stderr)
    fleet = ledger = None
    try:
        server.start()
        login = secure.settings(server.url) if secure else Settings(servers=(server.url,))
        run(_provision, server.url, args.populate_every, args.populate_count, login)
        fleet, ledger, host = _start_children(secure, server.url, args.bots, data)
        print(f"started a fleet supervisor keeping {args.bots} bots (scale: `corral scale N --host {host}` or key 6 in "
              f"the dashboard; logs in {data / 'logs'}); try: corral submit sum a=1 b=2", file=sys.stderr)
        print("started the ledger (data/ledger.duckdb); try: corral report rates-by-kind, "
              "corral query \"SELECT kind, count(*) FROM results GROUP BY kind\"", file=sys.stderr)
        if secure:
            print(f"secured: every process has its own user; for corral commands in another shell, "
                  f"`. {secure.write_operator_env(server.url)}` (removed when this run ends)", file=sys.stderr)
        if not args.no_tui and sys.stdin.isatty() and sys.stdout.isatty() and _dashboard_available():
            from corral.tui.app import run_dashboard

            run_dashboard(login, monitor_url=server.monitor_url)
        else:
            run(_status_lines, login)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping: draining bots, then the server", file=sys.stderr)
        stop(fleet)
        stop(ledger, timeout=15)  # the same SIGTERM-then-wait: it finishes its batch and closes DuckDB
        server.stop()
        if secure:
            secure.close()
    return 0
