"""The same no-op job for every system `corral bench compare` measures, and the marks it leaves.

Each job carries an index ``i`` and writes its start and end times (Unix seconds) into slot
``i`` of a shared-memory block named by ``CORRAL_BENCH_MARKS``, so the drain rate of every
system is read the same way: jobs over the span from the first start to the last end.

- corral: ``corral bot --handler add=corral.bench.peer:corral_add`` (an async handler).
- taskiq-nats: ``taskiq worker corral.bench.peer_taskiq:broker`` (``PullBasedJetStreamBroker``,
  pull batch 100 for the drain, no result backend: it records no result, which corral always does).
  The broker lives in its own module so that corral's bots, which import this one for their
  handler, do not load taskiq (and its aiohttp) into their RSS.
"""

from __future__ import annotations

import os
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any

MARKS_ENV = "CORRAL_BENCH_MARKS"
URL_ENV = "CORRAL_BENCH_URL"
TASKIQ_STREAM = "taskiq_jetstream"
TASKIQ_SUBJECT = "taskiq_tasks"
TASKIQ_DURABLE = "taskiq_durable"
#: Pull batch and fetch timeout for taskiq's workers. With a batch over 1, nats-py's fetch waits
#: for the whole batch until its timeout (with taskiq-nats' default of none, forever), so the
#: drain uses batch 100 with a 0.1 s timeout, and light-load latency uses taskiq's default batch 1.
BATCH_ENV = "CORRAL_BENCH_TASKIQ_BATCH"
FETCH_TIMEOUT = 0.1


class Marks:
    """``2 * n`` doubles in shared memory: [start_0, end_0, start_1, end_1, ...]; 0 means not yet."""

    def __init__(self, name: str | None = None, n: int = 0) -> None:
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=max(16, 16 * n))
            self.owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            # An attaching worker must not unlink the block when it exits: Python before 3.13
            # registers every attach with the resource tracker (3.13 has track=False).
            resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
            self.owner = False
        buf = self.shm.buf
        assert buf is not None, "a block just created or attached has its buffer"  # None only after close()
        self.view = buf.cast("d")

    @property
    def name(self) -> str:
        return self.shm.name

    def start(self, i: int) -> None:
        self.view[2 * i] = time.time()

    def end(self, i: int) -> None:
        self.view[2 * i + 1] = time.time()

    def reset(self) -> None:
        for k in range(len(self.view)):
            self.view[k] = 0.0

    def started(self, i: int) -> float:
        return self.view[2 * i]

    def ended(self, i: int) -> float:
        return self.view[2 * i + 1]

    def span(self, n: int) -> tuple[float, float, int]:
        """(first start, last end, jobs ended) over slots 0..n-1."""
        starts = [self.view[2 * i] for i in range(n) if self.view[2 * i]]
        ends = [self.view[2 * i + 1] for i in range(n) if self.view[2 * i + 1]]
        return (min(starts) if starts else 0.0), (max(ends) if ends else 0.0), len(ends)

    def close(self) -> None:
        self.view.release()
        self.shm.close()
        if self.owner:
            self.shm.unlink()


_marks: Marks | None = None


def _mark() -> Marks:
    global _marks
    if _marks is None:
        _marks = Marks(os.environ[MARKS_ENV])
    return _marks


async def corral_add(args: dict[str, Any], ctx: Any) -> int:
    """corral's no-op ``add``: marks its start and end around ``a + b``."""
    marks = _mark()
    marks.start(args["i"])
    value = args["a"] + args["b"]
    marks.end(args["i"])
    return value
