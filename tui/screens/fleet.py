"""Fleet: every host's supervisor, desired and live bots (``corral fleet-status``); scale one.

The rows come from :func:`corral.core.fleet.fleet_status`, read once a second by
the app while this screen is shown. Scaling writes ``desired.<host>`` through
the app (``CorralApp.scale_host``), so the supervisor on that host starts or
drains bots; only hosts listed here (a desired count or a live supervisor) can
be scaled.
"""

from __future__ import annotations

import signal

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from corral.core.fleet import MAX_BOTS_PER_HOST, HostStatus, SlotStatus, check_count
from corral.core.errors import ConfigError
from corral.tui.fleet_slots import SlotExits, exits_by_bot
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.bots import uptime
from corral.tui.store import BotRow
from corral.tui.widgets.fit import Col
from corral.tui.widgets.synced_table import SyncedTable

COLUMNS = [
    Col("host", "host", 0), Col("desired", "desired", 0), Col("live", "live", 0), Col("crash_loop", "crash loop", 0, min=6),
    Col("supervisor", "supervisor", 1, min=10), Col("heartbeat", "heartbeat", 2), Col("bots", "live bots", 3, flex=True),
    Col("by", "scaled by", 4, min=8),
]
#: One row per slot, from its supervisor's heartbeat (restarts, last exit, uptime, crash loop), and one per dead
#: incarnation of it the dashboard saw replaced.
SLOT_COLUMNS = [
    Col("bot", "slot bot", 0), Col("state", "state", 0), Col("restarts", "restarts", 0), Col("last_exit", "last exit", 0, min=8),
    Col("pid", "pid", 1), Col("up", "up", 1), Col("in_row", "in a row", 2), Col("retry", "retry in", 2),
]
SLOT_STYLE = {"running": "green", "backoff": "bold red", "draining": "yellow"}
STALE_FLEET = 5.0  #: seconds without a fleet read before the status line says so


def parse_count(text: str) -> int:
    """The typed desired count.

    Raises:
        ConfigError: not a whole number, negative, or above the per-host maximum.
    """
    try:
        n = int(text.strip())
    except ValueError:
        raise ConfigError(f"{text.strip()!r} is not a whole number: type 0-{MAX_BOTS_PER_HOST}") from None
    return check_count(n)


def host_cells(row: HostStatus, desired: int | None) -> tuple:
    if row.supervisor:
        sup = Text("alive", style="green") + Text(f" {row.supervisor}")
        if row.supervisor_connected is False:
            sup += Text(" (disconnected)", style="yellow")
    else:
        sup = Text("none", style="bold red")
    live = len(row.live)
    live_cell = Text(str(live), style="" if desired is None or live == desired else "bold yellow")
    age = "-" if row.supervisor_age is None else f"{row.supervisor_age:.1f}s ago"
    loop = Text(" ".join(row.crash_loop), style="bold red") if row.crash_loop else "-"
    return (row.host, "-" if desired is None else str(desired), live_cell, loop, sup, age, " ".join(row.live) or "-",
            row.desired_by or "-")


def exit_text(code: int | None, why: str) -> str:
    """``SIGKILL (exited)``, ``code 3 (crash_loop)``: how a slot's process last ended unasked, or ``-``."""
    if code is None:
        return why or "-"
    try:
        what = signal.Signals(-code).name if code < 0 else f"code {code}"
    except ValueError:
        what = f"signal {-code}"
    return f"{what} ({why})" if why else what


def slot_cells(slot: SlotStatus, exits: SlotExits, started_at: float | None, now: float) -> tuple:
    """A slot as its supervisor reports it; a supervisor too old to count restarts falls back on the exit events."""
    label = "crash loop" if slot.crash_loop else slot.state
    style = "bold white on red" if slot.crash_loop else SLOT_STYLE.get(slot.state, "")
    restarts = slot.restarts or exits.count
    started = slot.started_at or started_at
    return (slot.name, Text(label, style=style), str(restarts), exit_text(slot.last_code, slot.last_exit or exits.last_state),
            str(slot.pid or "-"), uptime(now - started) if started and slot.state == "running" else "-", str(slot.exits),
            "-" if slot.retry_in is None else f"{slot.retry_in:.1f}s")


def dead_incarnation_cells(row: BotRow, now: float) -> tuple:
    """An old process of a slot, replaced by the supervisor's restart: listed as dead under the slot, not overwritten."""
    b = row.beat
    return tuple(Text(c, style="bold red" if i == 1 else "dim") for i, c in enumerate((
        f"{b.name}@{b.pid}", "dead", "-", f"replaced {now - (row.gone_at or now):.0f}s ago", str(b.pid),
        uptime((row.gone_at or now) - b.started_at), "-", "-")))


class FleetScreen(TaskScreen):
    TITLE_TEXT = "fleet"
    BINDINGS = [
        Binding("plus", "scale_by(1)", "Scale up by 1", key_display="+"),
        Binding("minus", "scale_by(-1)", "Scale down by 1", key_display="-"),
        Binding("equals_sign", "scale_to", "Scale to N", key_display="="),
    ]

    def compose_body(self) -> ComposeResult:
        yield Label("", id="fleet-status", classes="section")
        yield SyncedTable(COLUMNS, id="fleet-table")
        yield Label("slots (from each supervisor's heartbeat)", classes="section")
        yield SyncedTable(SLOT_COLUMNS, id="slots-table")

    def on_mount(self) -> None:
        super().on_mount()
        self.corral.refresh_fleet()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.corral.refresh_fleet()

    def redraw(self) -> None:
        store = self.store
        rows = store.fleet
        self.query_one("#fleet-table", SyncedTable).sync((r.host, host_cells(r, store.desired(r))) for r in rows)
        self._redraw_slots()
        if not store.fleet_at:
            status = "reading the fleet…" if not store.fleet_error else f"cannot read the fleet: {escape(store.fleet_error)}"
        else:
            status = f"{len(rows)} host(s)  ·  + / - scale the selected host by one, = scale it to N"
            if not rows:
                status = "no fleet hosts: start one with `corral fleet --host NAME`"
            if store.fleet_error and store.clock() - store.fleet_at > STALE_FLEET:
                status += f"  ·  [red]not refreshed for {store.clock() - store.fleet_at:.0f}s: {escape(store.fleet_error)}[/]"
        self.query_one("#fleet-status", Label).update(status)

    def _redraw_slots(self) -> None:
        store, now = self.store, self.store.clock()
        exits = exits_by_bot(store.events)
        started = {r.beat.name: r.beat.started_at for r in store.bots.values() if r.gone_at is None}
        dead = [(key, r) for key, r in store.bots.items() if r.gone_why == "replaced"]
        rows = []
        for host in sorted(store.fleet_slots):
            for slot in store.fleet_slots[host]:
                rows.append((slot.name, slot_cells(slot, exits.get(slot.name, SlotExits()), started.get(slot.name), now)))
                rows.extend((key, dead_incarnation_cells(r, now)) for key, r in dead if r.beat.name == slot.name)
        self.query_one("#slots-table", SyncedTable).sync(rows)

    def _selected(self) -> HostStatus | None:
        host = self.query_one("#fleet-table", SyncedTable).selected_key()
        if self.focused is self.query_one("#slots-table"):  # a slot row scales the host it belongs to
            slot = self.query_one("#slots-table", SyncedTable).selected_key() or ""
            host = next((h for h, slots in self.store.fleet_slots.items() if any(s.name == slot for s in slots)), host)
        row = next((r for r in self.store.fleet if r.host == host), None)
        if row is None:
            self.notify("select a fleet host first", severity="warning")
        return row

    def action_scale_by(self, delta: int) -> None:
        row = self._selected()
        if row is None:
            return
        current = self.store.desired(row) or 0
        self._scale(row.host, current + delta)

    def action_scale_to(self) -> None:
        row = self._selected()
        if row is None:
            return
        current = self.store.desired(row)

        def done(n: int | None) -> None:
            if n is not None:
                self._scale(row.host, n)
        self.app.push_screen(ScaleScreen(row.host, current), done)

    def _scale(self, host: str, n: int) -> None:
        try:
            check_count(n)
        except ConfigError as e:
            self.notify(f"{host}: {e}", title="scale refused", severity="error")
            return
        self.corral.scale_host(host, n)


class ScaleScreen(ModalScreen[int | None]):
    """Type a desired count for one host; Enter scales, Esc cancels. Bad input is refused here."""

    BINDINGS = [Binding("escape", "close", "Cancel")]

    def __init__(self, host: str, current: int | None) -> None:
        super().__init__()
        self.host = host
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="scale-box", classes="modal-box"):
            now = "not set" if self.current is None else str(self.current)
            yield Label(f"Scale [b]{self.host}[/b] to how many bots? (now {now}; 0-{MAX_BOTS_PER_HOST})", id="scale-question")
            yield Input(value="" if self.current is None else str(self.current), placeholder="N", id="scale-count")
            yield Label("", id="scale-error", classes="error")
            with Horizontal(classes="modal-buttons"):
                yield Button("Scale (Enter)", variant="primary", id="scale-ok")
                yield Button("Cancel (Esc)", id="scale-cancel")

    def on_mount(self) -> None:
        box = self.query_one("#scale-count", Input)
        box.focus()
        box.select_all()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "scale-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        text = self.query_one("#scale-count", Input).value
        try:
            n = parse_count(text)
        except ConfigError as e:
            self.query_one("#scale-error", Label).update(str(e))
            self.notify(f"{self.host}: {e}", title="scale refused", severity="error")
            return
        self.dismiss(n)

    def action_close(self) -> None:
        self.dismiss(None)
