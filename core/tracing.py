"""End-to-end traces: a W3C ``traceparent`` from the submitter, one span per attempt.

OpenTelemetry is optional (``pip install 'corral[otel]'``). Without it nothing
here imports it and every function is a no-op, apart from reading a trace id
out of a ``traceparent`` header (a string split), so results and events still
carry the trace id a submitter sent.

* **Submitting** (core/submit.py): the current span's context is injected into
  the job message's headers (``traceparent``, ``tracestate``) by the globally
  configured propagator, or an explicit ``traceparent`` is passed
  (``corral submit --traceparent``).
* **Each attempt is a span** (kind ``CONSUMER``, named ``process <kind>``)
  whose parent is the submitter's context, with the job id, kind, queue,
  attempt and outcome as attributes (``corral.job.id``, ``corral.job.kind``,
  ``corral.queue``, ``corral.attempt``, ``corral.outcome``) and the messaging
  ones (``messaging.system: nats``, ``messaging.operation.type: process``).
  The handler runs inside it, so its own spans are children.
* **A retry is a new span linked to the one before** (not its child): the
  failed attempt's event records its span id, and the redelivery links to it.
  So one trace shows the submit and every attempt side by side.
* **Chains, sagas and fan-in keep the trace**: what a job submits after its
  outcome (next steps, compensations, a group's callback) is submitted inside
  the attempt's span, so it carries that span as its parent.

Spans are created only when a tracer provider is configured (the SDK's, or any
other); with the API alone installed a bot does no per-job tracing work. corral
never imports OpenTelemetry itself: a process that configures tracing has
imported it already (its setup code, or ``opentelemetry-instrument``), and one
that has not cannot have a current span or a provider, so the API is looked up
in ``sys.modules`` and a process without tracing pays neither the import (a
noticeable share of an ``@process`` child's start-up) nor any per-job work.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from corral.core.errors import InvalidJobError


TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
#: Outcomes that mark the attempt's span as an error.
_ERRORS = frozenset({"failed", "dead"})


@dataclass
class Attempt:
    """The running attempt's trace: its span (None when not recording) and ids (hex)."""

    span: Any = None
    trace_id: str | None = None
    span_id: str | None = None


_current: ContextVar[Attempt | None] = ContextVar("corral_attempt", default=None)


def check_traceparent(value: str) -> str:
    """Raises InvalidJobError: not a W3C traceparent (``00-<32 hex>-<16 hex>-<2 hex>``)."""
    m = _TRACEPARENT.match(value)
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        raise InvalidJobError(f"traceparent {value!r} is not a W3C traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>")
    return value


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The trace id in a message's ``traceparent`` header, or None."""
    value = (headers or {}).get(TRACEPARENT)
    m = _TRACEPARENT.match(value) if value else None
    return m.group(1) if m else None


def _api():
    """The OpenTelemetry trace API if this process has imported it (see the module's docstring), else None."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    return trace


def inject(headers: dict[str, str], traceparent: str | None = None) -> dict[str, str]:
    """Add ``traceparent`` to ``headers``: the given one, else the current span's (if any)."""
    if traceparent is not None:
        headers[TRACEPARENT] = check_traceparent(traceparent)
    elif (trace := _api()) is not None and trace.get_current_span().get_span_context().is_valid:
        from opentelemetry import propagate

        propagate.inject(headers)
    return headers


def recording() -> bool:
    """Whether a tracer provider records spans in this process (an attempt then opens one)."""
    trace = _api()
    return trace is not None and not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class _Untraced:
    """An attempt without a span: only its trace id is current (a plain class: entered once per job)."""

    __slots__ = ("state", "token")

    def __init__(self, headers: Mapping[str, str] | None) -> None:
        self.state = Attempt(None, trace_id_of(headers) if headers and TRACEPARENT in headers else None)

    def __enter__(self) -> Attempt:
        self.token = _current.set(self.state)
        return self.state

    def __exit__(self, *exc: object) -> None:
        _current.reset(self.token)


def untraced(headers: Mapping[str, str] | None) -> _Untraced:
    """An attempt without a span (:func:`attempt` when nothing records): the trace id in ``headers`` current."""
    return _Untraced(headers)


def attempt(job: Any, headers: Mapping[str, str] | None, number: int,
            previous: tuple[str, str] | None) -> contextlib.AbstractContextManager[Attempt]:
    """The span of one attempt at ``job`` (current while the body runs); ``previous``: (trace id, span id) to link."""
    if not recording():
        return _Untraced(headers)
    return _span(job, headers, number, previous)


@contextlib.contextmanager
def _span(job: Any, headers: Mapping[str, str] | None, number: int, previous: tuple[str, str] | None) -> Iterator[Attempt]:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

    parent = propagate.extract(dict(headers or {}))
    links = []
    if previous is not None:
        prev = SpanContext(int(previous[0], 16), int(previous[1], 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        links.append(Link(prev, {"corral.link": "previous_attempt"}))
    attributes = {"messaging.system": "nats", "messaging.operation.type": "process", "corral.job.id": job.id,
                  "corral.job.kind": job.kind, "corral.queue": job.queue, "corral.attempt": number}
    tracer = trace.get_tracer("corral")
    with tracer.start_as_current_span(f"process {job.kind}", context=parent, kind=SpanKind.CONSUMER, links=links,
                                      attributes=attributes, record_exception=False, set_status_on_exception=False) as span:
        ctx = span.get_span_context()
        state = Attempt(span, format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
        token = _current.set(state)
        try:
            yield state
        finally:
            _current.reset(token)


def outcome(name: str, detail: str | None = None) -> None:
    """Record the running attempt's outcome on its span (no-op outside an attempt or without a span)."""
    state = _current.get()
    if state is None or state.span is None:
        return
    state.span.set_attribute("corral.outcome", name)
    if name in _ERRORS:
        from opentelemetry.trace import StatusCode

        state.span.set_status(StatusCode.ERROR, detail)


def ids() -> tuple[str | None, str | None]:
    """(trace id, span id) of the running attempt, for its events ((None, None) outside one)."""
    state = _current.get()
    return (None, None) if state is None else (state.trace_id, state.span_id)


def current_trace_id() -> str | None:
    state = _current.get()
    return state.trace_id if state is not None else None
