"""Starting corral itself as a child process: the one argv and environment every spawner uses.

The fleet supervisor, `corral up`, the benchmarks, the chaos suite and the tests all start
`corral ...` children. They run ``python -m corral`` with the parent's interpreter (so a venv
that is not on PATH still works) and unbuffered output (so a log read by a test or an operator
is never a buffer behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any


def corral_argv(*args: str) -> list[str]:
    """The command line of ``corral ARGS...`` run by this interpreter."""
    return [sys.executable, "-m", "corral", *args]


def corral_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with Python output unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


def spawn_corral(
    *args: str,
    log: Path | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start ``corral ARGS...``; stdout and stderr go to ``log`` (a path is appended to), stdin is closed.

    ``env`` adds to (or overrides) this process's environment. Other keywords go to
    :class:`subprocess.Popen` (``start_new_session``, ``stdout``, ...).
    """
    opened = open(log, "ab") if isinstance(log, Path) else None
    out = opened or log
    if out is not None:
        popen.setdefault("stdout", out)
        popen.setdefault("stderr", subprocess.STDOUT)
    popen.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.Popen(corral_argv(*args), env=corral_env(env), **popen)
    finally:
        if opened is not None:
            opened.close()  # the child holds its own descriptor
