"""The lean trail: what a result implies, and what a first delivery's silence means."""

from __future__ import annotations

from corral.core.history import Death, attempts_made, deaths, first_delivery_unrecorded
from corral.core.messages import Event, EventType, JobResult, make_job
from corral.core.timeline import implied_by, with_result


def _result(attempt: int = 1, incarnation: str = "i1") -> JobResult:
    job = make_job("sum", {"a": 1}, correlation_id="order-7")
    return JobResult(job_id=job.id, kind="sum", queue="default", bot="b1", incarnation=incarnation, attempt=attempt,
                     started_at=100.0, finished_at=100.25, value=2, job=job)


def _ev(type_: EventType, attempt: int | None, ts: float = 0.0, incarnation: str = "i9", bot: str = "b9") -> Event:
    return Event(type=type_, ts=ts, attempt=attempt, incarnation=incarnation, bot=bot)


def test_a_result_implies_a_started_and_a_succeeded_with_its_bot_attempt_and_times():
    """Given a result, when its implied entries are derived, then they carry its bot, incarnation, attempt, times and duration."""
    started, succeeded = implied_by(_result())
    assert (started.type, started.ts, started.bot, started.incarnation, started.attempt) == (EventType.STARTED, 100.0, "b1", "i1", 1)
    assert (succeeded.type, succeeded.ts, succeeded.duration) == (EventType.SUCCEEDED, 100.25, 0.25)
    assert started.correlation_id == succeeded.correlation_id == "order-7" and started.kind == "sum"


def test_derived_entries_go_in_by_time_and_are_skipped_when_the_bot_wrote_them():
    """Given a trail with a chain event after the result and one with full events, then entries merge by time once each."""
    result = _result()
    chained = _ev(EventType.CHAINED, 1, ts=100.3, incarnation="i1")
    assert [e.type for e in with_result([chained], result)] == [EventType.STARTED, EventType.SUCCEEDED, EventType.CHAINED]
    full = [_ev(EventType.STARTED, 1, 100.0, "i1"), _ev(EventType.SUCCEEDED, 1, 100.3, "i1")]
    assert with_result(full, result) == full
    assert with_result(full, None) == full


def test_a_first_delivery_that_left_no_trace_counts_as_an_unknown_death_on_redelivery():
    """Given no event and a second delivery, then the first counts as an attempt that died beside others, bot unknown."""
    assert first_delivery_unrecorded([], delivered=2)
    assert attempts_made([], delivered=2) == 1
    assert deaths([], delivered=2) == [Death(1, "?", False)]
    assert not first_delivery_unrecorded([], delivered=1) and not first_delivery_unrecorded([])


def test_a_first_delivery_that_ended_any_other_way_is_not_a_death():
    """Given a first delivery that failed or was throttled (attempt 1 on record), then nothing is inferred."""
    for first in (EventType.FAILED, EventType.THROTTLED, EventType.HANDED_BACK):
        assert not first_delivery_unrecorded([_ev(first, 1)], delivered=2)
        assert deaths([_ev(first, 1)], delivered=2) == []


def test_a_lean_death_stays_counted_after_later_deliveries_record_theirs():
    """Given a lost first delivery and a second that started and died alone, then both count, without the delivery number."""
    trail = [Event(type=EventType.STARTED, ts=1, attempt=2, incarnation="i2", bot="b2", isolated=True)]
    assert attempts_made(trail) == 2 and attempts_made(trail, delivered=3) == 2
    assert deaths(trail) == [Death(1, "?", False), Death(2, "b2", True)]


def test_a_success_on_the_first_delivery_accounts_for_it_in_the_merged_trail():
    """Given a lean success whose ack was lost (a duplicate on delivery 2), then the merged trail shows no death."""
    result = _result()
    trail = with_result([_ev(EventType.DUPLICATE, 2, ts=101.0)], result)
    assert deaths(trail) == [] and not first_delivery_unrecorded(trail)


def test_a_replay_starts_the_inference_again():
    """Given a death before a replay and a silent first delivery after it, then only the new life's first delivery counts."""
    trail = [_ev(EventType.STARTED, 1), _ev(EventType.DEAD, 2), _ev(EventType.REPLAYED, None)]
    assert deaths(trail, delivered=2) == [Death(1, "?", False)]
    assert attempts_made(trail, delivered=1) == 0
