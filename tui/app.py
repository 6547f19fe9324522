"""The corral dashboard: a Textual app with one screen (mode) per operator task.

:class:`CorralApp` is three layers, one module each:

* ``tui/live.py`` (:class:`~corral.tui.live.LiveApp`): the connection and the live data. Feed
  workers (``tui/feeds.py``) read NATS and post :mod:`corral.tui.messages`; the app folds them
  into one :class:`corral.tui.store.Store`; a clock restarts any feed that ended, and every
  worker error lands in its ``worker_state``.
* ``tui/actions.py`` (:class:`~corral.tui.actions.ActionsApp`): the operator actions (drain,
  replay, purge, pause, submit, scale, cancel a job, add or remove a schedule), each an app
  worker, so no NATS call ever blocks the UI.
* this module: the screens, the keys, the help screen and the command palette.

Screens redraw from the store on a clock tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from corral.core.settings import Settings
from corral.tui.actions import ActionsApp
from corral.tui.keys import binding_commands, help_sections
from corral.tui.screens.analytics import AnalyticsScreen
from corral.tui.screens.base import TaskScreen
from corral.tui.screens.bots import BotsScreen
from corral.tui.screens.dead_letters import DeadLettersScreen
from corral.tui.screens.events import EventsScreen
from corral.tui.screens.features import FeaturesScreen
from corral.tui.screens.fleet import FleetScreen
from corral.tui.screens.help import HelpScreen
from corral.tui.screens.jobs import JobsScreen
from corral.tui.screens.logs import LogsScreen
from corral.tui.screens.overview import OverviewScreen
from corral.tui.screens.submit import SubmitScreen

SCREENS: Mapping[str, type[TaskScreen]] = {
    "overview": OverviewScreen,
    "bots": BotsScreen,
    "jobs": JobsScreen,
    "dead": DeadLettersScreen,
    "events": EventsScreen,
    "fleet": FleetScreen,
    "analytics": AnalyticsScreen,
    "features": FeaturesScreen,
    "logs": LogsScreen,
}


class CorralApp(ActionsApp):
    CSS_PATH = "app.tcss"
    TITLE = "corral"
    #: Below 36 rows (an 80x24 terminal) the overview compacts so the consumers table stays visible.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = dict(SCREENS)
    DEFAULT_MODE = "overview"
    BINDINGS = [
        # The footer shows one "1-8 Screens" entry (the ? screen lists each): eight would push Quit off an 80-column footer.
        Binding("1", "switch_mode('overview')", "Screens", key_display="1-9"),
        Binding("1", "switch_mode('overview')", "Overview", show=False),
        Binding("2", "switch_mode('bots')", "Bots", show=False),
        Binding("3", "switch_mode('jobs')", "Jobs", show=False),
        Binding("4", "switch_mode('dead')", "Dead letters", show=False),
        Binding("5", "switch_mode('events')", "Events", show=False),
        Binding("6", "switch_mode('fleet')", "Fleet", show=False),
        Binding("7", "switch_mode('analytics')", "Analytics", show=False),
        Binding("8", "switch_mode('features')", "Features", show=False),
        Binding("9", "switch_mode('logs')", "Logs", show=False),
        Binding("s", "submit", "Submit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def action_submit(self) -> None:
        self.push_screen(SubmitScreen())

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self.BINDINGS, SCREENS)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from binding_commands(self, screen)


def run_dashboard(settings: Settings, monitor_url: str | None = None) -> None:
    """Run the dashboard until the operator quits (blocking)."""
    CorralApp(settings, monitor_url).run()
