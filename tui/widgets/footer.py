"""The footer, with the keys an operator must always find (quit, help) first.

Textual's footer lists the screen's keys before the app's, so on an 80-column
terminal a screen with five actions pushes ``q Quit`` off the right edge. This
one puts :data:`ESSENTIAL` first and leaves the rest in Textual's order.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer

ESSENTIAL = ("quit", "help")  #: actions shown first, in this order


class CorralFooter(Footer):
    def compose(self) -> ComposeResult:
        # Safe to reorder: no binding here uses a Binding.Group, so every item is a plain FooterKey.
        keys = list(super().compose())
        rank: dict[str | None, int] = {action: i for i, action in enumerate(ESSENTIAL)}
        yield from sorted(keys, key=lambda k: rank.get(getattr(k, "action", None), len(rank)))
