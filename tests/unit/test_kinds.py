"""Submit-time checks: built-in kinds' argument schemas and what live bots' advertised kinds tell."""

from __future__ import annotations

import msgspec
import pytest

from corral.core.errors import InvalidJobError
from corral.core.handlers import BUILTINS, SCHEMAS, check_args
from corral.core.kinds import Coverage
from corral.core.messages import BotHeartbeat


@pytest.mark.parametrize("args, message", [
    ({"a": ""}, "argument a must be a number, got ''"),
    ({"a": 1}, "needs argument b"),
    ({"a": True, "b": 1}, "argument a must be a number"),
])
def test_sum_refuses_arguments_that_are_missing_or_not_numbers(args, message):
    """Given sum's schema, when an argument is missing or not a number, then the error names it."""
    with pytest.raises(InvalidJobError, match=message):
        check_args("sum", args)


def test_fitting_arguments_and_kinds_without_a_schema_pass():
    """Given good sum arguments or a kind with no schema, when checked, then nothing is raised."""
    check_args("sum", {"a": 1, "b": 2.5, "extra": "allowed"})
    check_args("resize", {"anything": [1, 2]})
    assert set(SCHEMAS) <= set(BUILTINS)


def test_a_heartbeat_from_a_bot_older_than_kinds_decodes_with_none():
    """Given a heartbeat without the kinds field, when decoded, then kinds is empty (an old bot interoperates)."""
    old = {"name": "b", "incarnation": "i", "host": "h", "pid": 1, "state": "running", "version": "0", "started_at": 0,
           "heartbeat_at": 0}
    assert msgspec.json.decode(msgspec.json.encode(old), type=BotHeartbeat).kinds == []


def test_coverage_only_concludes_when_live_bots_advertise_their_kinds():
    """Given no bots, old bots or new bots, when asked about a kind, then only new bots give a yes or no."""
    assert Coverage(bots=0).serves("sum") is None
    assert Coverage(bots=2, kinds=frozenset({"sum"}), unknown_bots=True).serves("resize") is None
    assert Coverage(bots=1, kinds=frozenset({"sum"})).serves("sum") is True
    assert Coverage(bots=1, kinds=frozenset({"sum"})).serves("smu") is False
