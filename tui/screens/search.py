"""Jobs found by payload: the ledger's answer to ``args.user=42 kind=resize since=10m``.

The query is parsed before this screen opens (:func:`corral.ledger.search.parse`,
so a bad one is refused where it was typed); the ledger answers it over NATS
(:func:`corral.ledger.client.ask`). Enter on a row opens that job's timeline; Esc goes back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from corral.core.errors import CorralError
from corral.ledger.client import ask
from corral.ledger.search import MAX_ROWS, PayloadQuery
from corral.tui.widgets.fit import Col, short_id
from corral.tui.widgets.synced_table import SyncedTable

if TYPE_CHECKING:
    from corral.tui.app import CorralApp

QUERY_TIMEOUT = 15.0  #: seconds to wait for the ledger
COLUMNS = [Col("id", "job", 0), Col("state", "state", 0), Col("kind", "kind", 0, min=6), Col("bot", "bot", 1, min=6),
           Col("created", "created", 2), Col("args", "args", 1, flex=True, max=400), Col("full_id", "job id", detail_only=True)]


def result_cells(row: dict[str, Any]) -> tuple:
    state = row["outcome"] if row["outcome"] != "unknown" else ("failed" if row["failures"] else "?")
    args = row["args"] if isinstance(row["args"], str) else json.dumps(row["args"])
    created = str(row["created_at"] or "-").replace("T", " ")[:19]
    return (short_id(row["job_id"]), state, row["kind"] or "", row["bot"] or "", created, args, row["job_id"])


class SearchScreen(Screen):
    DEFAULT_CSS = """
    SearchScreen #search-status { height: auto; padding: 0 1; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, text: str, query: PayloadQuery) -> None:
        super().__init__()
        self.text = text
        self.query_ = query

    def compose(self) -> ComposeResult:
        yield Label(f"searching the ledger: {self.text}", id="search-status", markup=False)
        yield SyncedTable(COLUMNS, id="search-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#search-table").focus()
        self._run()

    @work(exclusive=True, group="search", exit_on_error=False)
    async def _run(self) -> None:
        app = cast("CorralApp", self.app)
        status = self.query_one("#search-status", Label)
        try:
            nc, _ = app._connected()
            reply = await ask(nc, self.query_.sql, params=self.query_.params, max_rows=MAX_ROWS, timeout=QUERY_TIMEOUT)
        except (CorralError, ConnectionError) as e:
            status.update(f"{self.text}: {e}")
            status.add_class("error")
            return
        rows = [dict(zip(reply.columns, r, strict=True)) for r in reply.rows]
        self.query_one("#search-table", SyncedTable).sync((r["job_id"], result_cells(r)) for r in rows)
        more = " (more: narrow the search)" if reply.truncated else ""
        status.update(f"{len(rows)} job(s) match {self.text}{more} · Enter opens a job's timeline")

    @on(DataTable.RowSelected, "#search-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        from corral.tui.screens.describe import job_screen

        if event.row_key.value:
            self.app.push_screen(job_screen(cast("CorralApp", self.app), event.row_key.value))
