"""Describe views: one dead letter, event, bot or job in full, as rich renderables.

A table row is a summary cut to fit; these are the whole thing, every field and
every long value unabridged (the describe screen scrolls). They only format what
the store or :mod:`corral.core.jobrecord` already read; no NATS I/O here.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from corral.core.dlq import DeadLetter
from corral.core.jobrecord import JobRecord
from corral.core.messages import DeadLetterHeaders as H
from corral.tui.store import BotRow, EventRow
from corral.tui.widgets.job_inspector import render_record


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ts else "-"


def fields(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of name and whole value; long values wrap, never cut."""
    t = Table(title=title, title_justify="left", show_header=False, expand=True, box=None, padding=(0, 1))
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    for name, value in rows:
        t.add_row(name, value if isinstance(value, Text) else Text(str(value)))
    return t


def decoded(data: bytes) -> RenderableType:
    """The bytes as indented JSON when they are JSON, else as text (undecodable bytes escaped)."""
    try:
        return Syntax(json.dumps(json.loads(data), indent=2, sort_keys=True), "json", word_wrap=True, theme="ansi_dark")
    except (ValueError, UnicodeDecodeError):
        return Text(data.decode("utf-8", errors="backslashreplace"))


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, Any]]:
    """The Corral-* headers the dead letter was stored with."""
    return [(H.JOB_ID, d.job_id), (H.QUEUE, d.queue), (H.REASON, d.reason), (H.ATTEMPTS, d.attempts), (H.BOTS, d.bots or "-"),
            (H.DEAD_AT, f"{d.dead_at} ({when(d.dead_at)})"), (H.SOURCE_SUBJECT, d.source_subject)]


def describe_dead(d: DeadLetter, record: JobRecord | None = None) -> Group:
    parts: list[RenderableType] = [
        Text(f"dead letter #{d.seq} · job {d.job_id}", style="bold red"),
        Text("reason", style="bold"), Text(d.reason or "-"),
        fields("headers", dead_letter_headers(d)),
        Text(f"original bytes ({len(d.data)} B)", style="bold"), decoded(d.data),
    ]
    parts.append(Text("history", style="bold"))
    parts.append(render_record(record) if record is not None else Text("reading the job's history…", style="dim"))
    return Group(*parts)


def _value(v: Any) -> str:
    return json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)


def describe_event(row: EventRow) -> Group:
    e = msgspec.to_builtins(row.event)
    rows: list[tuple[str, Any]] = [("subject", row.subject)]
    for name, value in e.items():
        if name == "ts":
            value = f"{value} ({when(value)})"
        rows.append((name, _value(value)))
    return Group(Text(f"event {row.event.type}", style="bold"), fields("every field", rows))


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n else "-"


def describe_bot(row: BotRow, now: float) -> Group:
    b = row.beat
    state = b.state if row.gone_at is None else f"{row.gone_why or 'dead'} (was {b.state})"
    rows: list[tuple[str, Any]] = [
        ("state", state), ("host", b.host), ("pid", b.pid), ("incarnation", b.incarnation), ("version", b.version),
        ("started", when(b.started_at)), ("heartbeat", f"{when(b.heartbeat_at)} ({max(now - b.heartbeat_at, 0):.1f}s ago)"),
        ("queues", ", ".join(b.queues) or "-"), ("concurrency", b.concurrency), ("kinds", ", ".join(b.kinds) or "any"),
        ("done / failed / dead", f"{b.done} / {b.failed} / {b.dead}"),
        ("cpu", f"{b.cpu_percent:.1f}% now, {b.cpu_seconds:.2f}s total" if b.cpu_seconds else "-"), ("rss", mib(b.rss_bytes)),
    ]
    running = Table(title=f"running jobs ({len(b.current)})", title_justify="left", expand=True)
    for col in ("job", "kind", "for", "progress"):
        running.add_column(col, overflow="fold")
    for c in b.current:
        progress = "-" if c.progress is None else f"{c.progress:.0f}% {c.message or ''}".strip()
        running.add_row(c.id, c.kind, f"{now - c.since:.1f}s", progress)
    return Group(Text(f"bot {b.name}", style="bold"), fields("heartbeat", rows), running)


def describe_job(record: JobRecord) -> RenderableType:
    return render_record(record)
