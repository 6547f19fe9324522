"""The built wheel in a fresh venv: one `corral` namespace, and `corral up` works from an empty folder.

This is what someone who only runs `pip install corral-*.whl` gets, so it builds the wheel from
this checkout, installs it (dependencies from the package index, as a user would) into a new
venv, and runs the README's own handler and submit examples against the system it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corral.harness.server import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
GENERIC = ("core", "bots", "tui", "streams", "bench", "cli", "ledger", "harness")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with only the wheel built from this checkout (and its dependencies) installed."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(base / "dist"), str(ROOT)],
                   check=True, timeout=300)
    wheel = next((base / "dist").glob("corral-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    subprocess.run([str(base / "venv/bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=600)
    return base / "venv"


def _python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin/python"), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


def _readme_block(marker: str) -> str:
    """The README's python code block whose first line is ``# <marker>``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(f"# {marker}\n"))


def test_the_wheel_installs_one_corral_namespace_and_no_generic_top_level_modules(venv: Path, tmp_path: Path) -> None:
    """Given the wheel in a fresh venv, when its packages are imported, then `corral` is there and `core` is not."""
    assert _python(venv, "import corral; print(corral.__all__)", tmp_path).returncode == 0
    for name in GENERIC:
        assert _python(venv, f"import {name}", tmp_path).returncode != 0, f"the wheel installs a top-level {name!r}"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not [n for n in GENERIC if (site / n).exists()]


def test_the_editable_install_exposes_no_generic_top_level_module_either(tmp_path: Path) -> None:
    """Given the editable install the suite runs on, when another folder's Python imports `core`, then it fails and `corral.core` works."""
    found = subprocess.run([sys.executable, "-c", f"import importlib.util as u; print([n for n in {GENERIC!r} if u.find_spec(n)])"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr
    assert subprocess.run([sys.executable, "-c", "import corral.core.messages"], cwd=tmp_path, timeout=60).returncode == 0


def test_corral_up_from_an_empty_folder_runs_the_readme_handler(venv: Path, tmp_path: Path) -> None:
    """Given the wheel only, when `corral up --no-tui` runs in an empty folder, then bots get ready and the README's handler runs a job."""
    home, app = tmp_path / "empty", tmp_path / "app"
    home.mkdir()
    (app / "myapp").mkdir(parents=True)
    (app / "myapp/__init__.py").write_text("")
    (app / "myapp/jobs.py").write_text(_readme_block("myapp/jobs.py"))
    (app / "myapp/enqueue.py").write_text(_readme_block("myapp/enqueue.py"))
    port, http = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([str(venv / "bin/corral"), "up", "--no-tui", "--bots", "2", "--port", str(port), "--http-port", str(http),
                           "--populate-every", "off"], cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    bot = None
    try:
        wait_for(lambda: "bots=2" in (tmp_path / "up.log").read_text(), timeout=120, interval=0.2,
                 what=f"two ready bots (log: {tmp_path / 'up.log'})")
        env = {**os.environ, "CORRAL_NATS_URL": url}
        bot = subprocess.Popen([str(venv / "bin/corral"), "bot", "--name", "app-1", "--handler", "resize=myapp.jobs:resize"],
                               cwd=app, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "bot.log").open("w"))
        done = subprocess.run([str(venv / "bin/python"), "-m", "myapp.enqueue"], cwd=app, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.strip()

        def recorded() -> bool:
            shown = subprocess.run([str(venv / "bin/corral"), "job", job_id, "--json"], env=env, capture_output=True, text=True, timeout=30)
            return shown.returncode == 0 and '"width": 640' in shown.stdout

        wait_for(recorded, timeout=60, interval=0.2, what=f"the result of {job_id} (log: {tmp_path / 'bot.log'})")
        assert (home / "data/jetstream").is_dir(), "the store lands under the folder `corral up` ran in"
    finally:
        if bot is not None:
            bot.send_signal(signal.SIGTERM)
            bot.wait(30)
        up.send_signal(signal.SIGTERM)
        up.wait(90)
        log.close()
    assert up.returncode == 0

