"""The bot's hand-off of claimed jobs to its workers (bots/handoff.py)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from corral.bots.handoff import Handoff

pytestmark = pytest.mark.anyio


async def _worker(handoff: Handoff[int], name: str, got: list[tuple[str, int]]) -> None:
    while (item := await handoff.get()) is not None:
        got.append((name, item))
        await anyio.lowlevel.checkpoint()  # a job's work: others run meanwhile


async def test_every_item_reaches_exactly_one_worker_in_order_and_workers_end_once_closed():
    """Given three parked workers, when 100 items are put in bursts and the hand-off is closed, then
    every item is taken once, in the order put, and every worker ends."""
    handoff: Handoff[int] = Handoff()
    got: list[tuple[str, int]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name in "abc":
                tg.start_soon(_worker, handoff, name, got)
            await anyio.lowlevel.checkpoint()
            for i in range(100):
                handoff.put(i)
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()
            handoff.close()
    assert [i for _, i in got] == list(range(100))
    assert {name for name, _ in got} == set("abc")


async def test_items_queued_before_close_are_drained_before_the_workers_end():
    """Given items put with no worker running, when the hand-off is closed and a worker starts, then
    it takes all of them and then ends."""
    handoff: Handoff[int] = Handoff()
    for i in range(5):
        handoff.put(i)
    handoff.close()
    got: list[tuple[str, int]] = []
    with anyio.fail_after(5):
        await _worker(handoff, "a", got)
    assert [i for _, i in got] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        handoff.put(5)


async def test_a_cancelled_parked_worker_does_not_swallow_the_next_item():
    """Given two parked workers, when the first is cancelled and an item is put, then the other takes it."""
    handoff: Handoff[int] = Handoff()
    got: list[tuple[str, int]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()
            tg.start_soon(_cancellable, handoff, first, got)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(_worker, handoff, "second", got)
            await anyio.lowlevel.checkpoint()
            first.cancel()
            await anyio.lowlevel.checkpoint()
            handoff.put(7)
            handoff.close()
    assert got == [("second", 7)]


async def _cancellable(handoff: Handoff[int], scope: anyio.CancelScope, got: list[tuple[str, int]]) -> None:
    with scope:
        await _worker(handoff, "first", got)
