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
        handoff.spread()  # about to wait on its own job: what is queued goes to another worker
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


async def _greedy(handoff: Handoff[int], name: str, got: list[tuple[str, int]], release: anyio.Event) -> None:
    """A worker that takes what is queued behind its item without waiting, then waits on its own work."""
    while (item := await handoff.get()) is not None:
        got.append((name, item))
        while (more := handoff.take()) is not None:
            got.append((name, more))
        await release.wait()


async def test_a_burst_put_wakes_one_worker_and_it_takes_the_whole_burst():
    """Given three parked workers, when ten items are put at once, then one worker is woken and takes
    all ten in order; the others were never woken for them."""
    handoff: Handoff[int] = Handoff()
    got: list[tuple[str, int]] = []
    release = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name in "abc":
                tg.start_soon(_greedy, handoff, name, got, release)
            await anyio.lowlevel.checkpoint()
            for i in range(10):
                handoff.put(i)
            assert len(handoff._idle) == 2  # two workers still parked, unwoken
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            assert [i for _, i in got] == list(range(10))
            assert len({name for name, _ in got}) == 1
            release.set()
            handoff.close()


async def test_spread_wakes_another_worker_for_what_is_still_queued_and_put_front_goes_next():
    """Given two parked workers, when two items are put at once and the woken worker calls spread()
    before waiting on its own, then the other takes the second item; an item put in front of the
    queue is taken before the ones already queued."""
    handoff: Handoff[int] = Handoff()
    got: list[tuple[str, int]] = []
    release = anyio.Event()

    async def worker(name: str) -> None:
        while (item := await handoff.get()) is not None:
            got.append((name, item))
            handoff.spread()
            await release.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, "a")
            tg.start_soon(worker, "b")
            await anyio.lowlevel.checkpoint()
            handoff.put(1)
            handoff.put(2)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            assert sorted(got) == [("a", 1), ("b", 2)]
            handoff.put(3)
            handoff.put_front(0)
            assert handoff.take() == 0 and handoff.take() == 3 and handoff.take() is None
            release.set()
            handoff.close()
