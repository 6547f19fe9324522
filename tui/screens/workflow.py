"""The workflow screen: a chain, saga or fan-in group drawn as a tree, each step with its state.

Opened with ``w`` from a job's describe view (or the jobs screen); Enter on a
step describes that job; ``r`` reads the tree again; Esc goes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Label, Tree

from corral.tui.widgets.fit import short_id
from corral.tui.workflow import STATE_STYLE, Node, read_workflow

if TYPE_CHECKING:
    from corral.tui.app import CorralApp


def node_label(node: Node, focus: str) -> Text:
    """``then 0 · echo · 1a2b3c4d  succeeded``; the job the tree was opened from is marked."""
    text = Text.assemble((node.role, "bold"), f" · {node.kind}" if node.kind else "", f" · {short_id(node.job_id, 12)}  ",
                         (node.state, STATE_STYLE.get(node.state, "cyan")))
    if node.job_id == focus:
        text.append("  ◀", style="bold")
    return text


class WorkflowScreen(Screen):
    DEFAULT_CSS = """
    WorkflowScreen Tree { height: 1fr; border: round $primary; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("r", "reload", "Reload")]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.root: Node | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"workflow of job {self.job_id}", id="workflow-title", classes="section")
        yield Tree("reading…", id="workflow-tree")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Tree).focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="workflow", exit_on_error=False)
    async def _load(self) -> None:
        app = cast("CorralApp", self.app)
        self.draw(await read_workflow(app._connected_js(), self.job_id))

    def draw(self, root: Node) -> None:
        self.root = root
        tree = self.query_one(Tree)
        tree.clear()
        tree.root.set_label(node_label(root, self.job_id))
        tree.root.data = root.job_id

        def add(parent, node: Node) -> None:
            for child in node.children:
                branch = parent.add(node_label(child, self.job_id), data=child.job_id, expand=True)
                add(branch, child)
                if not child.children:
                    branch.allow_expand = False
        add(tree.root, root)
        tree.root.expand_all()

    @on(Tree.NodeSelected)
    def _describe(self, event: Tree.NodeSelected) -> None:
        from corral.tui.screens.describe import job_screen  # the describe screen opens this one too

        if event.node.data:
            self.app.push_screen(job_screen(cast("CorralApp", self.app), str(event.node.data)))

    def lines(self) -> list[str]:
        """Every node's label as plain text, depth-first (tests use this)."""
        out: list[str] = []

        def walk(n, depth: int) -> None:
            out.append("  " * depth + str(n.label.plain if hasattr(n.label, "plain") else n.label))
            for c in n.children:
                walk(c, depth + 1)
        walk(self.query_one(Tree).root, 0)
        return out
