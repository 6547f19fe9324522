"""What every task screen shares: the connection banner on top, the footer below,
and a redraw from the in-memory store on a clock tick.

Redrawing on a tick (rather than per message) is deliberate: ages ("heartbeat
3.2 s ago") change with the clock even when nothing arrives, and the tick
coalesces bursts of events into one redraw. No NATS I/O happens here. (The one
exception: a fleet read the app makes because the fleet bucket was written redraws the
Fleet or Bots screen as it lands.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Header
from textual.worker import Worker

from corral.tui.store import Store
from corral.tui.widgets.banner import ConnectionBanner
from corral.tui.widgets.footer import CorralFooter

if TYPE_CHECKING:
    from corral.tui.app import CorralApp

REDRAW_INTERVAL = 0.5  #: seconds between redraws from the store


class TaskScreen(Screen):
    """Subclasses implement ``compose_body`` and ``redraw``."""

    TITLE_TEXT = ""

    @property
    def corral(self) -> CorralApp:
        return cast("CorralApp", self.app)

    @property
    def store(self) -> Store:
        return self.corral.store

    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBanner(id="banner")
        yield from self.compose_body()
        yield CorralFooter()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.sub_title = self.TITLE_TEXT
        self.set_interval(REDRAW_INTERVAL, self._tick)
        self._tick()

    def on_screen_resume(self) -> None:
        self._tick()

    def _tick(self) -> None:
        if not self.is_attached:
            return
        self.query_one(ConnectionBanner).show(self.store, self.corral.settings.display)
        self.redraw()

    def redraw(self) -> None:
        """Bring the widgets up to date with the store."""

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        # StateChanged does not bubble: hand this screen's workers to the app's one handler.
        self.corral.worker_state(event)
