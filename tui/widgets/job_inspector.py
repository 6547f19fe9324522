"""One job in full: payload, event history, result, dead letter."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from core.dlq import DeadLetter
from core.messages import Event, Job, JobResult


@dataclass(frozen=True)
class JobRecord:
    """Everything the streams hold about one job (read in the Jobs screen's worker)."""

    job_id: str
    job: Job | None
    events: list[Event]
    result: JobResult | None
    dead: list[DeadLetter]
    pending: bool  #: still on the jobs stream, not yet taken to an outcome

    @property
    def known(self) -> bool:
        return bool(self.job or self.events or self.result or self.dead)


def _ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def render_record(rec: JobRecord) -> Group:
    parts: list = [Text(f"job {rec.job_id}", style="bold")]
    if not rec.known:
        parts.append(Text("no record of this job (unknown id, or past the streams' retention)", style="yellow"))
        return Group(*parts)
    status = "succeeded" if rec.result else "dead" if rec.dead else "pending" if rec.pending else (rec.events[-1].type if rec.events else "?")
    parts.append(Text(f"status: {status}", style={"succeeded": "green", "dead": "bold red"}.get(str(status), "cyan")))
    if rec.job:
        parts.append(Text(f"kind {rec.job.kind}  queue {rec.job.queue}/{rec.job.priority}  max attempts {rec.job.max_attempts}  timeout {rec.job.timeout:g}s"))
        parts.append(Text("payload: " + msgspec.json.encode(rec.job.args).decode()))
    if rec.events:
        t = Table(title="events", expand=True)
        for col in ("time", "event", "attempt", "bot", "detail"):
            t.add_column(col)
        for e in rec.events:
            detail = e.detail or (f"{e.duration * 1000:.1f} ms" if e.duration else "")
            t.add_row(_ts(e.ts), str(e.type), str(e.attempt or ""), e.bot or e.actor or "", detail)
        parts.append(t)
    if rec.result:
        r = rec.result
        parts.append(Text(f"result: {msgspec.json.encode(r.value).decode()}  (bot {r.bot}, attempt {r.attempt}, "
                          f"{(r.finished_at - r.started_at) * 1000:.1f} ms)", style="green"))
    for d in rec.dead:
        parts.append(Text(f"dead letter #{d.seq}: {d.reason} (attempts {d.attempts}{', bots ' + d.bots if d.bots else ''})", style="red"))
    return Group(*parts)


class JobInspector(VerticalScroll):
    DEFAULT_CSS = """
    JobInspector { height: 1fr; border: round $primary; padding: 0 1; }
    """

    def compose(self):
        yield Static("Enter a job id above, or press Enter on a row, to inspect it.", id="inspector-body")

    def show(self, rec: JobRecord) -> None:
        self.query_one("#inspector-body", Static).update(render_record(rec))

    def text(self) -> str:
        """What the inspector currently shows, as plain text."""
        body = self.query_one("#inspector-body", Static)
        return str(body.render())
