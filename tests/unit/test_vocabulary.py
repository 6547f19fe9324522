"""The wire vocabulary, names and state machine, without a server."""

from __future__ import annotations

import msgspec
import pytest

from corral.bots.state import ALLOWED, BotState, StateMachine
from corral.cli.submit import parse_kv
from corral.core.errors import ConfigError, IllegalTransitionError, InvalidJobError
from corral.core.handlers import Registry
from corral.core.history import deliveries_without_outcome
from corral.core.messages import Event, EventType, decode_job, encode, make_job
from corral.core.names import check_token, job_subject, parse_result_subject, result_fence, result_subject, subject_token


def test_a_job_round_trips_through_its_encoding():
    """Encoding then decoding a job gives the same job."""
    job = make_job("sum", {"a": 1, "b": 2}, correlation_id="c-1")
    assert decode_job(encode(job)) == job


def test_an_old_bot_decodes_a_payload_with_fields_it_does_not_know():
    """Unknown fields from a newer submitter are ignored (rolling upgrades)."""
    payload = b'{"id":"j1","kind":"sum","args":{"a":1,"b":2},"new_field":{"x":1},"v":2}'
    job = decode_job(payload)
    assert job.id == "j1" and job.args == {"a": 1, "b": 2} and job.v == 2


def test_a_payload_missing_newer_optional_fields_gets_their_defaults():
    """A v1-style minimal payload decodes with defaults for everything optional."""
    job = decode_job(b'{"id":"j2","kind":"sum"}')
    assert (job.queue, job.priority, job.max_attempts, job.timeout) == ("default", "normal", 3, 60.0)


@pytest.mark.parametrize("payload", [b"not json", b"{}", b'{"id":"a.b","kind":"x"}', b'{"id":"ok","kind":"x","timeout":-1}', b"\xff\xfe"])
def test_bad_payloads_are_refused_with_a_reason(payload):
    """Undecodable, incomplete, unsafe or out-of-range payloads raise InvalidJobError."""
    with pytest.raises(InvalidJobError):
        decode_job(payload)


@pytest.mark.parametrize("value", ["", "a.b", "a b", "a*", ">", "x" * 129, "ü"])
def test_hostile_tokens_never_reach_a_subject(value):
    """Dots, wildcards, spaces and overlong values are refused as subject tokens."""
    with pytest.raises(InvalidJobError):
        check_token(value, "job id")


def test_subjects_follow_the_documented_layout():
    """Jobs are per queue and priority; results are one subject per job and writer, fenced across the job."""
    assert job_subject("default", "high") == "corral.jobs.default.high"
    assert result_subject("abc", "bot-1") == "corral.results.abc.bot-1"
    assert result_fence("abc") == {"Nats-Expected-Last-Subject-Sequence": "0",
                                   "Nats-Expected-Last-Subject-Sequence-Subject": "corral.results.abc.*"}
    assert parse_result_subject("corral.results.abc.bot-1") == ("abc", "bot-1")
    assert parse_result_subject("corral.results.abc") == ("abc", None)
    assert parse_result_subject("corral.jobs.default.high") is None


def test_a_host_name_becomes_one_subject_token():
    """Given a host name with dots, when mapped for a bot name, then it is one valid token."""
    assert subject_token("web.example.com-12") == "web-example-com-12"
    assert check_token(subject_token("a b*c>" * 40), "bot name")


def test_every_allowed_transition_works_and_others_raise():
    """The state machine permits exactly the ALLOWED table."""
    for src, targets in ALLOWED.items():
        for dst in BotState:
            sm = StateMachine(lambda old, new: None)
            sm.state = src
            if dst in targets or dst == src:
                sm.to(dst)
                assert sm.state == dst
            else:
                with pytest.raises(IllegalTransitionError):
                    sm.to(dst)


def test_transitions_are_reported_to_the_listener():
    """Each change calls the listener with (old, new)."""
    seen = []
    sm = StateMachine(lambda old, new: seen.append((old, new)))
    sm.to(BotState.REGISTERING)
    sm.to(BotState.HEALTH_CHECK)
    assert seen == [(BotState.INITIALIZING, BotState.REGISTERING), (BotState.REGISTERING, BotState.HEALTH_CHECK)]


def test_deliveries_without_an_outcome_are_counted_per_attempt():
    """A start with no later outcome for the same attempt and incarnation counts as a death."""
    ev = lambda t, a, inc, bot: Event(type=t, ts=0, attempt=a, incarnation=inc, bot=bot)  # noqa: E731
    events = [
        ev(EventType.STARTED, 1, "i1", "b1"),
        ev(EventType.STARTED, 2, "i2", "b2"),
        ev(EventType.FAILED, 2, "i2", "b2"),
        ev(EventType.STARTED, 3, "i3", "b3"),
    ]
    assert deliveries_without_outcome(events) == [(1, "b1"), (3, "b3")]


def test_cli_job_arguments_parse_json_values():
    """a=1 is a number, name=x a string, and a missing = is a clear error."""
    assert parse_kv(["a=1", "name=x", "l=[1,2]"]) == {"a": 1, "name": "x", "l": [1, 2]}
    with pytest.raises(ConfigError):
        parse_kv(["oops"])


def test_handler_specs_are_validated_when_the_bot_starts():
    """A malformed or missing --handler fails fast with a ConfigError."""
    assert Registry.build(["add=operator:add"]).get("add")(2, 3) == 5
    for bad in ["nokind", "k=nomodule", "k=no.such.module:fn", "k=operator:nope"]:
        with pytest.raises(ConfigError):
            Registry.build([bad])


def test_events_encode_without_empty_fields():
    """Optional fields left unset are not written (compact audit trail)."""
    data = encode(Event(type=EventType.STARTED, ts=1.0, job_id="j"))
    assert msgspec.json.decode(data) == {"type": "started", "ts": 1.0, "job_id": "j"}


def test_a_replay_clears_the_poison_evidence():
    """Deaths before an operator's replay do not count against the replayed job."""
    ev = lambda t, a, inc: Event(type=t, ts=0, attempt=a, incarnation=inc, bot=inc)  # noqa: E731
    events = [ev(EventType.STARTED, 1, "i1"), ev(EventType.STARTED, 2, "i2"), ev(EventType.REPLAYED, None, None),
              ev(EventType.STARTED, 1, "i3")]
    assert deliveries_without_outcome(events) == [(1, "i3")]


def test_a_job_writes_every_field_including_its_schema_version():
    """Defaults are written too, so a stored job keeps its values if a default changes."""
    data = msgspec.json.decode(encode(make_job("sum", {"a": 1})))
    assert data["v"] == 1 and data["max_attempts"] == 3 and data["timeout"] == 60.0


def test_a_log_field_named_event_cannot_break_a_log_call():
    """A field that clashes with the event name is kept, not raised as a TypeError."""
    import io

    from corral.core.log import Logger

    out = io.StringIO()
    Logger("t", stream=out).warning("publish.lost", event="started")
    assert "event=publish.lost" in out.getvalue() and "event_field=started" in out.getvalue()


def test_a_job_subject_parses_to_its_queue_and_priority_and_anything_else_to_none():
    """Given delivery subjects, then only corral.jobs.<queue>.<priority> yields (queue, priority)."""
    from corral.core.names import parse_job_subject

    assert parse_job_subject("corral.jobs.emails.high") == ("emails", "high")
    assert parse_job_subject("corral.jobs.emails.urgent") is None
    assert parse_job_subject("corral.results.x") is None
    assert parse_job_subject("corral.jobs.a.b.high") is None
