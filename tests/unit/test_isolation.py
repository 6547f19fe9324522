"""``@process`` handlers without a server: the spec, the child protocol, a crashing child."""

from __future__ import annotations

import os

import pytest

from corral.bots.isolation import run_isolated
from corral.core.errors import ConfigError, HandlerProcessError, JobError
from corral.core.handlers import JobContext, Registry
from corral.core.messages import make_job


def _ctx(progress=lambda percent, message=None: None) -> JobContext:
    return JobContext(job=make_job("t", {}), attempt=1, bot="unit", progress=progress)


def test_a_process_suffix_marks_a_sync_kind_isolated_by_its_import_string():
    """``kind=module:function@process`` registers the function and remembers where the child imports it from."""
    registry = Registry.build(["add=tests.isolated_handlers:add@process", "plain=tests.isolated_handlers:boom"])
    assert registry.isolated == {"add": "tests.isolated_handlers:add"}
    assert registry.get("add")({"a": 1, "b": 2}, _ctx())["sum"] == 3


def test_a_later_spec_for_the_same_kind_replaces_the_isolation():
    """The last ``--handler`` for a kind wins, suffix included."""
    registry = Registry.build(["k=tests.isolated_handlers:add@process", "k=tests.isolated_handlers:add"])
    assert registry.isolated == {}


def test_an_unknown_suffix_or_an_async_handler_in_a_process_is_refused():
    """Only ``@process`` exists, and only for sync handlers: both mistakes fail when the bot starts."""
    for bad in ["k=tests.isolated_handlers:add@thread", "k=tests.isolated_handlers:async_add@process"]:
        with pytest.raises(ConfigError):
            Registry.build([bad])


def test_ctx_lock_without_a_connection_says_why():
    """A @process handler's context has no connection: ctx.lock raises a JobError that names the reason."""
    with pytest.raises(JobError, match="@process"):
        _ctx().lock("x")


@pytest.mark.anyio
async def test_a_child_returns_values_relays_progress_and_raises_the_handlers_own_exception():
    """The value comes back from another process; the handler's ValueError arrives as a ValueError."""
    reports = []
    value = await run_isolated("tests.isolated_handlers:add", {"a": 2, "b": 40}, _ctx(lambda *report: reports.append(report)))
    assert value["sum"] == 42 and value["pid"] != os.getpid()
    assert reports == [(50.0, "adding")]
    with pytest.raises(ValueError, match="no good"):
        await run_isolated("tests.isolated_handlers:boom", {"message": "no good"}, _ctx())


@pytest.mark.anyio
async def test_a_child_that_dies_fails_only_its_job_and_the_next_job_gets_a_new_child():
    """os._exit in the handler: HandlerProcessError with the exit code; the pool starts a fresh child."""
    first = (await run_isolated("tests.isolated_handlers:add", {"a": 0, "b": 0}, _ctx()))["pid"]
    with pytest.raises(HandlerProcessError, match="exit code 70"):
        await run_isolated("tests.isolated_handlers:die", {"code": 70}, _ctx())
    after = (await run_isolated("tests.isolated_handlers:add", {"a": 0, "b": 0}, _ctx()))["pid"]
    assert after != first
