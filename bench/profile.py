"""Profile a bot under the throughput scenario: ``python -m corral.bench.profile [--bots 4] [--jobs N] [--seconds S]``.

Builds a backlog of `sum` jobs with the consumer paused, starts the bots,
attaches py-spy (non-blocking sampling, idle frames dropped) to the first one,
resumes the consumer, and prints where that bot's CPU time goes: by leaf
function (self time) and by function anywhere on the stack (inclusive). The
raw collapsed stacks are kept for flame-graph tools.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream

from corral.bench.corral_io import pause_jobs, resume_jobs, wait_for_messages
from corral.bench.fleet import Fleet
from corral.bench.server import provision_for_bench, running_server
from corral.core.handlers import generate
from corral.core.connect import connect
from corral.core.errors import ConfigError, CorralError
from corral.core.log import get_logger
from corral.core.names import RESULTS_STREAM
from corral.core.settings import Settings
from corral.core.submit import raise_for, submit_many


def py_spy() -> str:
    """Path of py-spy (next to this Python, then PATH).

    Raises:
        ConfigError: not installed.
    """
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise ConfigError("py-spy not found: pip install py-spy")
    return found


async def profile(url: str, out: Path, bots: int, jobs: int, seconds: float, log_dir: Path) -> None:
    await provision_for_bench(url)
    nc = await connect(Settings(servers=(url,)), get_logger("bench"), wait=False)
    try:
        js = nc.jetstream()
        await pause_jobs(js)
        raise_for(await submit_many(js, generate("sum", jobs, "default")))
        with Fleet(url, log_dir, [f"prof-{i}" for i in range(bots)]) as fleet:
            await fleet.wait_ready()
            cmd = [py_spy(), "record", "--pid", str(fleet.bots[0].pid), "--duration", str(int(seconds)),
                   "--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)]
            async with await anyio.open_process(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy:
                await anyio.sleep(1.0)  # py-spy attaches asynchronously; give it the first second
                await resume_jobs(js)
                await wait_for_messages(nc, RESULTS_STREAM, jobs, timeout=max(60.0, jobs / 20))
                if await spy.wait():
                    raise CorralError(f"py-spy failed: {await _text(spy.stderr)}")
    finally:
        await nc.close()


async def _text(stream: ByteReceiveStream | None) -> str:
    """What a finished process wrote to ``stream``, decoded."""
    if stream is None:
        return ""
    return b"".join([chunk async for chunk in stream]).decode(errors="replace").strip()


def summarize(collapsed: Path, top: int = 20) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"\n{title}:")
        lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in counter.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``; line numbers would split one function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})"


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m corral.bench.profile")
    p.add_argument("--bots", type=int, default=4)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--sync", default="always", choices=("always", "2m"))
    p.add_argument("--out", type=Path, default=Path("bot-profile.txt"), help="py-spy raw (collapsed) stacks")
    args = p.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="corral-profile-"))
    with running_server(args.sync, log_dir) as server:
        anyio.run(profile, server.url, args.out, args.bots, args.jobs, args.seconds, log_dir)
    print(summarize(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
