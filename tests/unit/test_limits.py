"""Limits without a server: rate syntax, definitions, throttle delays, and how throttled deliveries are counted."""

from __future__ import annotations

import pytest

from corral.core.errors import ConfigError
from corral.core.history import throttled_deliveries
from corral.core.limits import THROTTLE_CAP, LimitDef, parse_rate, period_text, throttle_delay, window
from corral.core.messages import Event, EventType


@pytest.mark.parametrize(("text", "expected"), [
    ("5/1s", (5, 1.0)), ("100/1m", (100, 60.0)), ("5/s", (5, 1.0)), ("10/500ms", (10, 0.5)), ("2/1.5h", (2, 5400.0)),
])
def test_a_rate_is_starts_per_period(text, expected):
    """N/PERIOD with ms, s, m or h; a bare unit means 1 of it."""
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["abc", "5", "5/", "/1s", "5/1d", "-1/1s", "5/1 s x", ""])
def test_a_rate_that_is_not_n_per_period_is_refused(text):
    """Anything but N/PERIOD is a ConfigError naming the accepted forms."""
    with pytest.raises(ConfigError, match="N/PERIOD"):
        parse_rate(text)


def test_periods_print_in_the_unit_they_were_given():
    """1m prints as 1m, not 60s; odd periods fall back to seconds or milliseconds."""
    assert [period_text(p) for p in (1.0, 60.0, 3600.0, 0.5, 1.5)] == ["1s", "1m", "1h", "500ms", "1.5s"]


@pytest.mark.parametrize("limit", [
    LimitDef(), LimitDef(concurrency=0), LimitDef(rate=0), LimitDef(rate=1, per=0.01), LimitDef(concurrency=1, lease=0.5),
])
def test_a_definition_out_of_range_is_refused(limit):
    """No limit at all, a zero cap or rate, a too-short period or lease: ConfigError."""
    with pytest.raises(ConfigError):
        limit.validate()


def test_fixed_windows_are_aligned_to_the_period():
    """Every bot computes the same window from the same clock: floor(now / per)."""
    assert window(119.9, 60.0) == 1 and window(120.0, 60.0) == 2


def test_throttle_delays_grow_with_the_jobs_throttles_up_to_the_cap():
    """The first throttle waits well under a second, a long-throttled job about 30 s; a rate waits for its window."""
    assert all(0.15 <= throttle_delay(0) <= 0.25 for _ in range(100))
    assert all(22.5 <= throttle_delay(40) <= THROTTLE_CAP for _ in range(100))
    assert all(0.7 <= throttle_delay(0, wait=0.7, spread=1.0) <= 1.7 for _ in range(100))


def test_throttles_before_the_backstop_last_about_48_minutes():
    """At the median delay, the 108 throttles max_deliver (110) leaves a job span most of an hour."""
    total = sum(min(0.2 * 1.5 ** n, THROTTLE_CAP) for n in range(108))
    assert 45 * 60 < total < 52 * 60


def test_throttled_deliveries_are_counted_since_the_last_replay():
    """A replay starts a new message whose deliveries count from 1, so earlier throttles no longer count."""
    ev = lambda t: Event(type=t, ts=0)  # noqa: E731
    events = [ev(EventType.THROTTLED), ev(EventType.STARTED), ev(EventType.FAILED), ev(EventType.REPLAYED),
              ev(EventType.THROTTLED), ev(EventType.THROTTLED), ev(EventType.STARTED)]
    assert throttled_deliveries(events) == 2
