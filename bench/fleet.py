"""Real `corral bot` processes, started and stopped the way an operator would."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anyio
import psutil

from corral.core.errors import CorralError
from corral.core.spawn import spawn_corral


class BotProc:
    """One `corral bot` subprocess; its log (stdout and stderr) goes to a file."""

    def __init__(self, url: str, name: str, log_dir: Path, *extra: str) -> None:
        self.name = name
        self.log_path = log_dir / f"bot-{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = spawn_corral("bot", "--server", url, "--name", name, *extra, log=log)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        """True once the bot logged ``bot.ready``.

        Raises:
            CorralError: the bot exited first (its log tail is quoted).
        """
        text = self.log_path.read_text(errors="replace")
        if "event=bot.ready" in text:
            return True
        if self.proc.poll() is not None:
            raise CorralError(f"bot {self.name} exited with {self.proc.returncode}:\n{text[-1500:]}")
        return False

    def rss(self) -> int:
        """Resident set size in bytes (0 once the process is gone)."""
        try:
            return self.ps.memory_info().rss
        except psutil.Error:
            return 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful drain), then SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class Fleet:
    """Several bots; a context manager that always stops them."""

    def __init__(self, url: str, log_dir: Path, names: list[str], *extra: str) -> None:
        self.bots = [BotProc(url, name, log_dir, *extra) for name in names]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once every bot is ready.

        Raises:
            CorralError: one exited, or not all were ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not all(b.ready() for b in self.bots):
            if time.monotonic() > deadline:
                raise CorralError(f"bots not ready after {timeout}s: see {self.bots[0].log_path.parent}")
            await anyio.sleep(0.05)

    def by_name(self, name: str) -> BotProc:
        return next(b for b in self.bots if b.name == name)

    def stop(self) -> None:
        for b in self.bots:
            if b.proc.poll() is None:
                b.proc.send_signal(signal.SIGTERM)
        for b in self.bots:
            b.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
