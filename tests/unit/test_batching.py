"""Batch specs and the collector that shares one handler call among jobs (no server needed)."""

from __future__ import annotations

import anyio
import pytest

from corral.bots.batching import Collector
from corral.core.errors import ConfigError
from corral.core.handlers import BatchItem, BatchSpec, JobContext, Registry, batch
from corral.core.messages import make_job
import anyio.lowlevel

pytestmark = pytest.mark.anyio


@batch(size=3, wait=0.5)
async def tripled(items: list[BatchItem], ctx) -> list:
    return [3 * i.args["n"] for i in items]


def _item(n: int) -> BatchItem:
    job = make_job("t", {"n": n})
    return BatchItem(id=job.id, args=job.args, attempt=1, ctx=JobContext(job=job, attempt=1, bot="b"))


@pytest.mark.parametrize(("text", "spec"), [("", BatchSpec(20, 0.05)), ("50", BatchSpec(50, 0.05)),
                                            ("50:100ms", BatchSpec(50, 0.1)), ("2:1.5s", BatchSpec(2, 1.5)),
                                            ("1:0", BatchSpec(1, 0.0))])
def test_a_batch_suffix_gives_its_size_and_wait_in_seconds(text, spec):
    """Given a @batch suffix, when parsed, then size and wait are as written, defaults filling gaps."""
    assert BatchSpec.parse("k=m:f@batch", text) == spec


def test_the_batch_decorator_marks_a_kind_the_registry_batches():
    """Given a handler decorated @batch(size=3), when registered without a suffix, then the registry batches it by 3."""
    registry = Registry.build(["t=tests.unit.test_batching:tripled"])
    assert registry.batches == {"t": BatchSpec(3, 0.5)}
    assert Registry.build(["t=tests.unit.test_batching:tripled@batch:7"]).batches["t"].size == 7


def test_a_sync_batch_handler_is_refused():
    """Given a sync function, when registered @batch, then the registry refuses it with a ConfigError."""
    with pytest.raises(ConfigError, match="must be async"):
        Registry.build(["t=tests.batch_handlers:_append@batch"])


async def test_jobs_joining_within_the_wait_share_one_call_and_a_full_batch_fires_at_once():
    """Given a size-3 collector, when 4 jobs join at once, then one call of 3 fires, the 4th after the wait, each gets its own value."""
    collector = Collector("t", tripled, BatchSpec(3, 0.2))
    values: dict[int, int] = {}

    async def one(n: int) -> None:
        values[n] = await collector.call(_item(n), 10)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(one, n)
    assert values == {0: 0, 1: 3, 2: 6, 3: 9}
    assert collector.sizes == [3, 1]


async def test_a_job_cancelled_while_its_batch_waits_leaves_the_batch():
    """Given two jobs waiting in a batch, when one is cancelled before it fires, then the call carries only the other."""
    collector = Collector("t", tripled, BatchSpec(5, 0.3))
    got: list[int] = []

    async def one(n: int, scope: anyio.CancelScope) -> None:
        with scope:
            got.append(await collector.call(_item(n), 10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            doomed = anyio.CancelScope()
            tg.start_soon(one, 1, anyio.CancelScope())
            tg.start_soon(one, 2, doomed)
            while collector.open is None or len(collector.open.slots) < 2:
                await anyio.lowlevel.checkpoint()
            doomed.cancel()
    assert got == [3] and collector.sizes == [1]
