"""`corral health`: check real capability, not just a TCP connect."""

from __future__ import annotations

import argparse
import secrets
import time

import anyio

from corral.cli.common import add_json, add_server, positive_float, print_json, run, settings
from corral.core.connect import connect
from corral.core.errors import CorralError
from corral.core.history import job_result
from corral.core.log import get_logger
from corral.core.messages import make_job
from corral.core.status import live_bots
from corral.core.submit import submit
from corral.streams import load_declarations
from corral.streams.provision import live_config, diff


def register(sub) -> None:
    p = sub.add_parser("health", help="check server, JetStream, resources (and with --probe a job round trip)")
    add_server(p)
    add_json(p)
    p.add_argument("--probe", action="store_true", help="also send an echo job through a live bot and wait for its result")
    p.add_argument("--timeout", type=positive_float, default=15.0, help="seconds to wait for the probe (default 15)")
    p.set_defaults(func=cmd)


async def checks(args: argparse.Namespace) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    try:
        nc = await connect(settings(args), get_logger("health"), wait=False)
    except CorralError as e:
        return [("server", False, str(e))]
    url = nc.connected_url  # None once the connection has dropped again
    out.append(("server", True, f"connected to {url.netloc if url else 'the server'}"))
    try:
        js = nc.jetstream()
        try:
            info = await js.account_info()
            out.append(("jetstream", True, f"{info.streams} streams, {info.storage} bytes stored"))
        except Exception as e:  # noqa: BLE001 - reported as the check's failure
            out.append(("jetstream", False, f"JetStream not available: {e}"))
            return out
        for decl in load_declarations():
            live = await live_config(nc, decl)
            if live is None:
                out.append((f"{decl.kind} {decl.name}", False, "missing: run `corral provision`"))
                continue
            drift = diff(live, decl.config)
            out.append((f"{decl.kind} {decl.name}", not drift, "as declared" if not drift else f"differs: {drift}"))
        if args.probe:
            out.append(await probe(js, args.timeout))
    finally:
        await nc.close()
    return out


async def probe(js, timeout: float) -> tuple[str, bool, str]:
    bots = [b for b in await live_bots(js) if b.state in ("ready", "processing")]
    if not bots:
        return ("probe", False, "no live bot is ready to take the probe job")
    nonce = secrets.token_hex(8)
    job = make_job("echo", {"probe": nonce}, timeout=5, max_attempts=1)
    start = time.monotonic()
    await submit(js, job)
    with anyio.move_on_after(timeout):
        while True:
            result = await job_result(js, job.id)
            if result is not None:
                ok = isinstance(result.value, dict) and result.value.get("probe") == nonce
                return ("probe", ok, f"round trip {1000 * (time.monotonic() - start):.0f} ms via {result.bot}")
            await anyio.sleep(0.05)
    return ("probe", False, f"no result for probe job {job.id} within {timeout}s ({len(bots)} live bots)")


async def _health(args: argparse.Namespace) -> int:
    results = await checks(args)
    ok = all(passed for _, passed, _ in results)
    if args.json:
        print_json({"ok": ok, "checks": [{"check": c, "ok": p, "detail": d} for c, p, d in results]})
    else:
        for check, passed, detail in results:
            print(f"{'ok  ' if passed else 'FAIL'} {check:34} {detail}")
    return 0 if ok else 1


def cmd(args: argparse.Namespace) -> int:
    return run(_health, args)
