"""End-to-end traces with the real OpenTelemetry SDK and its in-memory exporter, a real server and a real bot.

The bot runs in this process (the exporter is in memory), with the same code path as `corral bot`.
"""

from __future__ import annotations

import anyio
import pytest

otel = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra (opentelemetry-sdk) is not installed")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from corral.bots.bot import Bot  # noqa: E402
from corral.bots.config import BotConfig  # noqa: E402
from corral.core.handlers import BUILTINS, JobContext, Registry  # noqa: E402
from corral.core.history import job_events, job_result  # noqa: E402
from corral.core.log import get_logger  # noqa: E402
from corral.core.messages import EventType, Job, make_job  # noqa: E402
from corral.core.settings import Settings  # noqa: E402
from corral.core.submit import submit  # noqa: E402
from tests.conftest import eventually  # noqa: E402

pytestmark = pytest.mark.anyio

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider():
    """The process-wide provider (OpenTelemetry allows setting it once), exporting to memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield provider
    provider.shutdown()


async def flaky(args: dict, ctx: JobContext) -> str:
    if ctx.attempt < 2:
        raise RuntimeError("the first attempt fails")
    return "ok"


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


async def _with_bot(url: str, body):
    registry = Registry({**BUILTINS, "flaky": flaky})
    bot = Bot(Settings(servers=(url,)), BotConfig(name="tracer", liveness_ttl=3, backoff_base=0.1, backoff_max=0.2),
              get_logger("bot"), registry)
    async with anyio.create_task_group() as tg:
        tg.start_soon(bot.run)
        try:
            await body()
        finally:
            bot.stop(force=True)


def _attempt_spans(job_id: str):
    return sorted((s for s in EXPORTER.get_finished_spans() if (s.attributes or {}).get("corral.job.id") == job_id),
                  key=lambda s: (s.attributes or {})["corral.attempt"])


async def test_submit_retry_success_gives_one_trace_with_linked_attempt_spans(js, provisioned):
    """Given a job submitted inside a span that fails once, both attempts are consumer spans under it, the retry linked to the first."""
    tracer = trace.get_tracer("test")
    job = make_job("flaky", {})
    with tracer.start_as_current_span("enqueue", kind=SpanKind.PRODUCER) as parent:
        await submit(js, job)
    ctx = parent.get_span_context()

    async def body():
        await eventually(lambda: job_result(js, job.id), timeout=20, what="the job's result")
        await eventually(lambda: _done(lambda: len(_attempt_spans(job.id)) == 2), timeout=10, what="two attempt spans")

    await _with_bot(provisioned.url, body)
    first, second = _attempt_spans(job.id)
    for span, n in ((first, 1), (second, 2)):
        assert span.name == "process flaky" and span.kind == SpanKind.CONSUMER
        assert span.context.trace_id == ctx.trace_id and span.parent.span_id == ctx.span_id
        assert span.attributes["corral.attempt"] == n and span.attributes["corral.job.kind"] == "flaky"
        assert span.attributes["corral.queue"] == "default" and span.attributes["messaging.system"] == "nats"
    assert first.attributes["corral.outcome"] == "failed" and first.status.status_code == StatusCode.ERROR
    assert second.attributes["corral.outcome"] == "succeeded"
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    result = await job_result(js, job.id)
    assert result.trace_id == _hex(ctx.trace_id, 32)
    failed = [e for e in await job_events(js, job.id) if e.type == EventType.FAILED]
    assert failed and failed[0].span_id == _hex(first.context.span_id, 16)


async def test_a_chain_step_keeps_the_trace_as_a_child_of_the_step_before(js, provisioned):
    """Given a job with a next step, the step's attempt span is a child of the first job's attempt span, in the same trace."""
    tracer = trace.get_tracer("test")
    job = make_job("sum", {"a": 1, "b": 2}, then=[Job(kind="sum", args={"a": 0, "b": 0})])
    with tracer.start_as_current_span("enqueue"):
        await submit(js, job)
    step_id = f"{job.id}-then0"

    async def body():
        await eventually(lambda: job_result(js, step_id), timeout=20, what="the chained step's result")
        await eventually(lambda: _done(lambda: _attempt_spans(step_id)), timeout=10, what="the step's span")

    await _with_bot(provisioned.url, body)
    (first,), (step,) = _attempt_spans(job.id), _attempt_spans(step_id)
    assert step.context.trace_id == first.context.trace_id
    assert step.parent.span_id == first.context.span_id


async def test_an_explicit_traceparent_is_carried_without_a_current_span(js, provisioned):
    """Given `traceparent=` on submit and no current span, the attempt joins that trace and the result names it."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job = make_job("sum", {"a": 2, "b": 2})
    await submit(js, job, traceparent=tp)

    async def body():
        await eventually(lambda: job_result(js, job.id), timeout=20, what="the job's result")
        await eventually(lambda: _done(lambda: _attempt_spans(job.id)), timeout=10, what="the span")

    await _with_bot(provisioned.url, body)
    (span,) = _attempt_spans(job.id)
    assert _hex(span.context.trace_id, 32) == "0af7651916cd43dd8448eb211c80319c"
    assert _hex(span.parent.span_id, 16) == "b7ad6b7169203331"
    assert (await job_result(js, job.id)).trace_id == "0af7651916cd43dd8448eb211c80319c"


async def _done(check):
    return check()
