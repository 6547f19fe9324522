"""The dispatcher's round robin (bots/dispatcher.py Rotation) and the fair subjects, without a server."""

from __future__ import annotations

import pytest

from corral.bots.dispatcher import Rotation
from corral.core.errors import InvalidJobError
from corral.core.messages import make_job
from corral.core.names import fair_subject, parse_fair_subject
from corral.core.submit import destination


def test_two_keys_with_equal_weights_alternate():
    """Given A and B with work and weight 1, when 6 starts are dealt, then they alternate."""
    assert Rotation().deal({"A": 100, "B": 100}, {}, 6) == ["A", "B", "A", "B", "A", "B"]


def test_weights_three_to_one_give_three_starts_to_one_per_round():
    """Given A weight 3 and B weight 1, when 8 starts are dealt, then A gets 3 then B 1, twice."""
    assert Rotation().deal({"A": 100, "B": 100}, {"A": 3}, 8) == ["A", "A", "A", "B"] * 2


def test_a_turn_carries_over_from_one_deal_to_the_next():
    """Given A weight 3 had 2 starts when a deal ended, when the next deal runs, then A gets 1 more before B."""
    r = Rotation()
    assert r.deal({"A": 100, "B": 100}, {"A": 3}, 2) == ["A", "A"]
    assert r.deal({"A": 100, "B": 100}, {"A": 3}, 3) == ["A", "B", "A"]


def test_a_new_key_joins_at_the_end_of_the_round_and_an_empty_one_is_skipped():
    """Given A alone just had a start, when B arrives and A has 1 job left, then B goes next and the rest go to B."""
    r = Rotation()
    assert r.deal({"A": 100}, {}, 3) == ["A", "A", "A"]
    assert r.deal({"A": 1, "B": 100}, {}, 4) == ["B", "A", "B", "B"]
    assert r.deal({}, {}, 4) == []


def test_a_job_with_a_fairness_key_goes_to_its_line_in_the_fair_stream():
    """Given a job with key acme, when its destination is asked, then it is acme's subject in CORRAL_FAIR."""
    job = make_job("sum", {}, fairness_key="acme", priority="high")
    assert destination(job) == ("corral.fair.default.high.acme", "CORRAL_FAIR")
    assert parse_fair_subject(fair_subject("q1", "low", "t-9")) == ("q1", "low", "t-9")
    assert parse_fair_subject("corral.fair.q1.urgent.t") is None


def test_a_fairness_key_that_is_not_a_subject_token_is_refused():
    """Given a key with a dot, when the job is made, then it is refused naming the key."""
    with pytest.raises(InvalidJobError, match=r"fairness key 'a\.b'"):
        make_job("sum", {}, fairness_key="a.b")
