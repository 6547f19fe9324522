"""Every key in one list: for the ``?`` help screen and for the command palette.

Both read the bindings themselves, so a new key shows up in help and in the
palette without anything else to update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from corral.tui.screens.base import TaskScreen
from corral.tui.screens.confirm import ConfirmScreen


def binding_commands(app: App, screen: Screen) -> Iterable[SystemCommand]:
    """A palette command per app-wide key, then per key of the current screen."""
    for b in app.BINDINGS:
        if isinstance(b, Binding) and b.description:
            yield SystemCommand(b.description, f"key {b.key_display or b.key}", partial(app.run_action, b.action))
    for b in getattr(screen, "BINDINGS", []):
        if isinstance(b, Binding) and b.description and b.show:
            yield SystemCommand(f"{screen.sub_title}: {b.description}", f"key {b.key_display or b.key}",
                                partial(screen.run_action, b.action))


def help_sections(app_bindings: list, screens: Mapping[str, type[TaskScreen]]) -> list[tuple[str, list]]:
    """Every binding, app-wide first, then per screen, then the confirmation's."""
    sections: list[tuple[str, list]] = [("everywhere", list(app_bindings))]
    for cls in screens.values():
        sections.append((cls.TITLE_TEXT, list(cls.BINDINGS)))
    sections.extend(view_sections())
    sections.append(("confirmation", list(ConfirmScreen.BINDINGS)))
    return sections


def view_sections() -> list[tuple[str, list]]:
    """Keys every table has, and those of the describe and workflow views."""
    from corral.tui.screens.describe import DescribeScreen  # these screens import the app's screens in turn
    from corral.tui.screens.workflow import WorkflowScreen
    from corral.tui.widgets.synced_table import SyncedTable

    return [("every table", [*SyncedTable.BINDINGS, Binding("enter", "describe", "Describe the row")]),
            ("describe view", list(DescribeScreen.BINDINGS)), ("workflow", list(WorkflowScreen.BINDINGS))]
