"""One job in full: queue and priority, payload, latest progress, event history, result, dead letter."""

from __future__ import annotations

import datetime as dt
import io

import msgspec
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from corral.core.jobrecord import JobRecord
from corral.core.messages import Event, EventType


def _ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def _fold_progress(events: list[Event]) -> list[Event]:
    """The events with only the latest progress report: a handler may report every half second,
    and the earlier reports would push everything else out of view."""
    last = max((i for i, e in enumerate(events) if e.type == EventType.PROGRESS), default=None)
    return [e for i, e in enumerate(events) if e.type != EventType.PROGRESS or i == last]


class EventLog:
    """A job's events: a table where there is room, else one line per event (the inspector has
    half of an 80-column terminal, where five table columns would wrap every cell)."""

    WIDE = 64  #: columns from which the events are a table

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = [(_ts(e.ts), str(e.type), str(e.attempt or ""), e.bot or e.actor or "",
                 e.detail or (f"{e.duration * 1000:.1f} ms" if e.duration else "")) for e in self.events]
        if options.max_width >= self.WIDE:
            t = Table(title="events", expand=True)
            for col in ("time", "event", "attempt", "bot", "detail"):
                t.add_column(col)
            for row in rows:
                t.add_row(*row)
            yield t
            return
        yield Text("events", style="bold")
        for ts, etype, attempt, who, detail in rows:
            yield Text.assemble((ts[:8], "dim"), " ", (etype, "bold"), f" #{attempt}" if attempt else "",
                                f" {who}" if who else "", f": {detail}" if detail else "")


def render_record(rec: JobRecord) -> Group:
    parts: list = [Text(f"job {rec.job_id}", style="bold")]
    if not rec.known:
        parts.append(Text("no record of this job (unknown id, or past the streams' retention)", style="yellow"))
        return Group(*parts)
    status = rec.status  # core/jobrecord.py: a running first delivery has no event yet and is `started`
    parts.append(Text(f"status: {status}", style={"succeeded": "green", "dead": "bold red"}.get(str(status), "cyan")))
    if job := rec.job:
        parts.append(Text(f"kind {job.kind}  queue {job.queue}/{job.priority}  max attempts {job.max_attempts}  timeout {job.timeout:g}s"))
        parts.append(Text("payload: " + msgspec.json.encode(job.args).decode()))
    reports = [e for e in rec.events if e.type == EventType.PROGRESS]
    if reports:
        parts.append(Text(f"progress: {reports[-1].detail or '?'}  (at {_ts(reports[-1].ts)}, {len(reports)} report(s))", style="cyan"))
    if rec.events:
        parts.append(EventLog(_fold_progress(rec.events)))
    if rec.result:
        r = rec.result
        parts.append(Text(f"result: {msgspec.json.encode(r.value).decode()}  (bot {r.bot}, attempt {r.attempt}, "
                          f"{(r.finished_at - r.started_at) * 1000:.1f} ms)", style="green"))
    for d in rec.dead:
        parts.append(Text(f"dead letter #{d.seq}: {d.reason} (attempts {d.attempts}{', bots ' + d.bots if d.bots else ''})", style="red"))
    if rec.trace_id:
        parts.append(Text(f"trace: {rec.trace_id}", style="dim"))
    return Group(*parts)


class JobInspector(VerticalScroll):
    DEFAULT_CSS = """
    JobInspector { height: 1fr; border: round $primary; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: RenderableType = "Enter a job id above, or press Enter on a row, to inspect it."

    def compose(self):
        yield Static(self._shown, id="inspector-body")

    def show(self, rec: JobRecord) -> None:
        self._shown = render_record(rec)
        self.query_one("#inspector-body", Static).update(self._shown)

    def text(self) -> str:
        """What the inspector currently shows, as plain text wrapped at its width."""
        console = Console(file=io.StringIO(), width=max(self.scrollable_content_region.width, 20), color_system=None, record=True)
        console.print(self._shown)
        return console.export_text()
