"""A bot's slots: a finished job gives its handler slot back before its result is committed (bots/slots.py)."""

from __future__ import annotations

import anyio
import pytest

from corral.bots.slots import Slots


@pytest.mark.anyio
async def test_a_job_that_ran_frees_its_handler_slot_while_it_still_holds_its_place():
    """Given a bot of 2 slots whose two jobs both ran and wait for their commit, the pull loop can take
    two more jobs at once; their places are given back only when each is settled."""
    slots = Slots(2, commit_depth=4)
    assert await slots.take() == 2
    first, second = slots.hold(), slots.hold()
    first.ran()
    second.ran()
    first.ran()  # idempotent: a job's slot is given back once
    assert await slots.take() == 2, "two handler slots are free while the first two jobs wait for their commit"
    assert slots.places.value == 2
    first.settled()
    second.settled()
    assert slots.places.value == 4 and slots.handlers.value == 0


@pytest.mark.anyio
async def test_held_jobs_never_exceed_concurrency_plus_the_commit_depth():
    """Given every place taken by jobs that ran and wait for their commit, the pull loop waits for a place."""
    slots = Slots(2, commit_depth=2)
    holds = []
    for _ in range(2):
        for _ in range(await slots.take()):
            hold = slots.hold()
            hold.ran()
            holds.append(hold)
    assert len(holds) == 4 and slots.places.value == 0
    with anyio.move_on_after(0.05) as waited:
        await slots.take()
    assert waited.cancelled_caught, "no place is free until a held job is settled"
    holds[0].settled()
    assert await slots.take() == 1


def test_a_one_slot_bot_holds_one_job_at_a_time():
    """Given concurrency 1, no finished job waits beside a running one: a death there is the running job's own."""
    slots = Slots(1)
    assert slots.depth == 0 and slots.workers == 1 and slots.places.value == 1


@pytest.mark.anyio
async def test_unused_slots_are_given_back_in_pairs():
    """Given four slots taken for a claim that brought one job, the three no job came for are returned whole."""
    slots = Slots(4, commit_depth=4)
    assert await slots.take() == 4
    slots.give_back(3)
    assert slots.handlers.value == 3 and slots.places.value == 7
