"""A second-language client: tests/node/client.mjs, written from docs/ with the official @nats-io packages."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.functional.test_ledger import ledgers  # noqa: F401 - the fixture

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
STEPS = ("submit", "duplicate submit is one job", "read result", "result fence", "read events", "read dead letter",
         "list live bots", "ping a bot", "find the ledger service", "query the ledger")


def node_or_skip() -> str:
    """The node binary; a skip outside CI when node or the packages are missing, a failure in CI."""
    node = shutil.which("node")
    if node is None:
        missing = "node is not installed"
    elif not (NODE_DIR / "node_modules").is_dir():
        missing = "tests/node/node_modules is absent: run `npm ci --prefix tests/node`"
    else:
        return node
    if os.environ.get("CI"):
        pytest.fail(f"{missing} (CI is set, so this cannot be skipped; .ci/run installs the packages)")
    pytest.skip(missing)


def test_the_node_client_passes_every_step_against_real_bots_and_a_ledger(provisioned, bots, ledgers, tmp_path):  # noqa: F811
    """Given a server, a bot and a ledger, when client.mjs runs, then it prints ok for every step and exits 0."""
    node = node_or_skip()
    bot = bots(provisioned.url, "node-b1")
    ledgers(provisioned.url, tmp_path / "ledger.duckdb")
    wait_for(bot.ready, what="the bot to be ready")
    run = subprocess.run([node, str(NODE_DIR / "client.mjs"), provisioned.url], capture_output=True, text=True, timeout=100)
    report = f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-2000:]}"
    passed = {line[3:].split(":", 1)[0] for line in run.stdout.splitlines() if line.startswith("ok ")}
    assert not set(STEPS) - passed, f"steps that did not pass: {sorted(set(STEPS) - passed)}\n{report}"
    assert run.returncode == 0 and "FAIL" not in run.stdout, report
