"""Running `corral bot` as a child process (chaos suite, benchmarks, tests)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from corral.core.spawn import spawn_corral


class BotProcess:
    """A real `corral bot` subprocess, its log captured to a file under ``log_dir``."""

    def __init__(self, url: str, name: str, log_dir: Path, *extra: str, ttl: float = 3.0) -> None:
        self.name = name
        self.url = url
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"bot-{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = spawn_corral("bot", "--server", url, "--name", name, "--ttl", str(ttl),
                                 "--outbox", str(log_dir / f"outbox-{name}"), *extra, log=self._log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        return "event=bot.ready" in self.log()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
