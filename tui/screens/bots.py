"""Bots: every bot in the liveness bucket, live from the KV watch; drain one.

A bot whose name a new process took (a fleet supervisor restarting its slot)
stays listed, greyed, as ``replaced`` with its old pid, so a crash is seen
even when the replacement arrives before the dead bot's key expires.

"1m" and "share" show how the work spreads: jobs each live bot finished in the
last minute (the change of its heartbeat's ``done`` counter) and its percentage
of all live bots' total, so one bot taking a whole burst while another idles shows.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from corral.core.fleet import slot_of
from corral.tui.describe import describe_bot
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.describe import DescribeScreen
from corral.tui.store import BotRow
from corral.tui.widgets.fit import Col, short_id
from corral.tui.widgets.synced_table import SyncedTable

COLUMNS = [
    Col("name", "bot", 0), Col("state", "state", 0), Col("current", "current job", 1, flex=True, min=10),
    Col("recent", "1m", 1), Col("share", "share", 1),
    Col("pid", "pid", 1), Col("heartbeat", "heartbeat", 2), Col("up", "up", 2), Col("done", "done", 3),
    Col("failed", "failed", 3), Col("dead", "dead", 3), Col("host", "host", 4, min=8), Col("version", "version", 5),
]
STATE_STYLE = {"ready": "green", "processing": "bold cyan", "error": "bold red", "shutting_down": "yellow",
               "health_check": "yellow", "registering": "yellow", "initializing": "yellow"}
GONE_STATE = {"expired": ("dead", "bold white on red"), "replaced": ("replaced", "bold red"), "stopped": ("stopped", "bold yellow")}


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def uptime(seconds: float) -> str:
    """``42s``, ``7m``, ``3h05m``: how long a process has been up."""
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def bot_cells(row: BotRow, now: float, share: tuple[int, float] | None = None) -> tuple:
    b = row.beat
    if row.gone_at is not None:
        label, style = GONE_STATE.get(row.gone_why, ("dead", "bold red"))
        state = Text(label, style=style)
    else:
        state = Text(b.state, style=STATE_STYLE.get(b.state, ""))
    if b.current and row.gone_at is None:
        c = b.current[0]
        current = f"{short_id(c.id)} {c.kind} {now - c.since:.1f}s" + (f" +{len(b.current) - 1}" if len(b.current) > 1 else "")
    else:
        current = "-"
    up = uptime((row.gone_at or now) - b.started_at)
    recent, pct = ("-", "-") if share is None else (str(share[0]), f"{share[1]:.0f}%")
    cells = (b.name, state, current, recent, pct, str(b.pid), _age(max(now - b.heartbeat_at, 0)), up,
             str(b.done), str(b.failed), str(b.dead), b.host, b.version)
    if row.gone_why == "replaced":  # greyed: a record of the process that died, not a bot to act on
        return tuple(c if isinstance(c, Text) else Text(c, style="dim") for c in cells)
    return cells


class BotsScreen(TaskScreen):
    TITLE_TEXT = "bots"
    BINDINGS = [Binding("d", "drain", "Drain bot")]

    def compose_body(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="bots-table")

    def on_mount(self) -> None:
        super().on_mount()
        self.corral.refresh_fleet()  # to know which bots a supervisor would replace when drained

    def redraw(self) -> None:
        now = self.store.clock()
        rows = sorted(self.store.bots.items(), key=lambda kv: (kv[1].beat.name, kv[1].gone_at is None, kv[1].beat.started_at))
        shares = self.store.work_shares()
        self.query_one("#bots-table", SyncedTable).sync(
            (key, bot_cells(r, now, shares.get(key) if r.gone_at is None else None)) for key, r in rows)

    @on(DataTable.RowSelected, "#bots-table")
    def _describe(self, event: DataTable.RowSelected) -> None:
        """Enter: the bot's heartbeat in full: running jobs, counters, CPU and memory."""
        row = self.store.bots.get(event.row_key.value or "")
        if row is not None:
            self.app.push_screen(DescribeScreen(f"bot {row.beat.name}", describe_bot(row, self.store.clock())))

    def supervisor_of(self, name: str) -> tuple[str, int] | None:
        """(fleet host, its desired count) when a live supervisor owns bot ``name``."""
        for host in self.store.fleet:
            if host.supervisor and slot_of(host.host, name) is not None:
                return host.host, self.store.desired(host) or 0
        return None

    def action_drain(self) -> None:
        name = self.query_one("#bots-table", SyncedTable).selected_key()
        row = self.store.bots.get(name) if name else None
        if not name or row is None or row.gone_at is not None:
            self.notify("select a live bot to drain", severity="warning")
            return
        jobs = len(row.beat.current)
        question = f"Drain bot {name}? It stops claiming, finishes its {jobs} running job(s), deregisters and exits."
        owner = self.supervisor_of(name)
        if owner is None:
            self.corral.confirm_then(question, lambda: self.corral.drain_bot(name), yes="Drain")
            return
        host, desired = owner
        question += (f"\n\n{name} is supervised by fleet host {host} (desired {desired}): the supervisor will start a "
                     f"replacement at once. To run one bot fewer, scale {host} down to {max(desired - 1, 0)} instead.")
        self.corral.confirm_then(question, lambda: self.corral.drain_bot(name), yes="Drain anyway",
                                 alt=(f"Scale {host} to {max(desired - 1, 0)}", lambda: self.corral.scale_host(host, max(desired - 1, 0))))
