"""Property-based: no bytes and no job-shaped garbage can make decoding do anything but refuse clearly."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.errors import InvalidJobError
from corral.core.messages import Job, decode_job
from corral.core.names import check_token

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
job_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.text(max_size=200), "kind": json_values | st.text(max_size=300),
        "args": json_values, "queue": json_values | st.text(max_size=50), "priority": json_values,
        "timeout": json_values, "max_attempts": json_values, "created_at": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused_or_decoded_never_anything_else(data):
    """Arbitrary bytes either decode to a valid job or raise InvalidJobError."""
    try:
        job = decode_job(data)
    except InvalidJobError:
        return
    assert isinstance(job, Job) and job.validate() is job


@settings(max_examples=400, deadline=None)
@given(job_like)
def test_wrongly_typed_job_objects_are_refused_with_a_reason(obj):
    """Job-shaped JSON with wrong types or values raises InvalidJobError naming the problem, or is valid."""
    try:
        job = decode_job(msgspec.json.encode(obj))
    except InvalidJobError as e:
        assert str(e)
        return
    check_token(job.id, "job id")
    check_token(job.queue, "queue")
    assert 0 < job.timeout <= 86_400 and 1 <= job.max_attempts <= 100


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_string_is_a_safe_subject_token_or_refused(value):
    """Whatever a user types as an id, what reaches a subject has no dots, wildcards or spaces."""
    try:
        token = check_token(value, "job id")
    except InvalidJobError:
        return
    assert not any(c in token for c in ".*> \t\r\n")
