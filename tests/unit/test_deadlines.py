"""Shared handler deadlines (bots/deadlines.py): never early, at most a grain late, one timer per grain."""

from __future__ import annotations

import anyio
import pytest

from corral.bots.deadlines import Deadlines, job_scope

pytestmark = pytest.mark.anyio


async def test_a_deadline_cancels_no_earlier_than_its_timeout_and_at_most_a_grain_later():
    """Given a 0.2 s deadline on a sleeping scope, it is cancelled between 0.2 s and 0.2 s plus a grain (and slack)."""
    deadlines = Deadlines(grain=0.05)
    started = anyio.current_time()
    with anyio.fail_after(5), anyio.CancelScope() as scope:  # fail_after: a deadline that never fires fails
        deadlines.add(scope, 0.2)
        await anyio.sleep_forever()
    elapsed = anyio.current_time() - started
    assert scope.cancelled_caught
    assert 0.2 <= elapsed < 0.2 + 0.05 + 0.5, elapsed  # slack for a loaded machine
    assert len(deadlines) == 0


async def test_a_job_that_ends_in_time_is_not_cancelled_by_its_grain():
    """Given two scopes due in the same grain, when one is discarded, only the other is cancelled."""
    deadlines = Deadlines(grain=0.05)
    kept, done = anyio.CancelScope(), anyio.CancelScope()
    grain = deadlines.add(done, 0.1)
    deadlines.discard(grain, done)
    with anyio.fail_after(5), kept:
        assert deadlines.add(kept, 0.1) in (grain, grain + 1)
        await anyio.sleep_forever()
    assert kept.cancelled_caught and not done.cancel_called


async def test_jobs_due_in_one_grain_share_one_timer():
    """Given 100 scopes added at once with the same timeout, they fall into at most two grains."""
    deadlines = Deadlines(grain=0.05)
    scopes = [anyio.CancelScope() for _ in range(100)]
    grains = [deadlines.add(s, 30.0) for s in scopes]
    assert len(set(grains)) <= 2 and len(deadlines) == 100
    for grain, scope in zip(grains, scopes, strict=True):
        deadlines.discard(grain, scope)
    assert len(deadlines) == 0


async def test_a_grain_whose_jobs_all_ended_keeps_no_timer():
    """Given jobs with hour-long timeouts finishing one after another over many grains, when each
    ends, then no grain (and no timer) outlives its last job."""
    deadlines = Deadlines(grain=0.001)
    for i in range(50):
        scope = anyio.CancelScope()
        grain = deadlines.add(scope, 3600.0 + 0.002 * i)  # each job due in a grain of its own
        assert deadlines.grains == 1
        deadlines.discard(grain, scope)
        assert deadlines.grains == 0


async def test_a_job_scope_is_anyios_level_triggered_cancel_scope():
    """Given a job scope (made without anyio's backend lookup), it is an anyio cancel scope: a
    deadline's cancel is caught by it, a shield inside it holds, and a swallowed cancel comes again."""
    deadlines = Deadlines(grain=0.05)
    shielded_done = again = False
    with anyio.fail_after(5), job_scope() as scope:
        assert isinstance(scope, anyio.CancelScope)
        deadlines.add(scope, 0.05)
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.2)  # past the deadline: the shield holds
            shielded_done = True
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass  # swallowed by the "handler"...
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            again = True  # ...and delivered again at its next await
            raise
    assert scope.cancelled_caught and shielded_done and again
