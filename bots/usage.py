"""What a bot process costs, for its heartbeat: CPU seconds, CPU share since the last beat, RSS.

Sampled once per heartbeat from ``resource.getrusage`` (one syscall) and
``/proc/self/statm`` (one small read), so a dashboard can show a bot's CPU and
memory without a metrics scraper. Where ``/proc`` is missing (not Linux), RSS
falls back to the peak ``ru_maxrss`` the kernel reports.
"""

from __future__ import annotations

import os
import resource
import sys
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident set now (peak resident set where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def cpu_seconds() -> float:
    """User plus system CPU time of this process (threads included; a ``@process`` child is not)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Usage:
    """Successive samples: each :meth:`sample` gives the CPU share since the one before."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._cpu = cpu_seconds()

    def sample(self) -> tuple[float, float, int]:
        """(``cpu_seconds``, ``cpu_percent`` of one core since the last sample, ``rss_bytes``)."""
        now, cpu = time.monotonic(), cpu_seconds()
        elapsed = now - self._at
        percent = 100.0 * (cpu - self._cpu) / elapsed if elapsed > 0 else 0.0
        self._at, self._cpu = now, cpu
        return round(cpu, 3), round(max(percent, 0.0), 1), rss_bytes()
