"""The package layering: which corral package may import which, checked on every module's source.

Every ``import`` counts, including those inside functions (a lazy import is still a
dependency). The allowed direction, lowest layer first:

    core      the vocabulary and client library: imports no other corral package
    streams   declarations + provisioner: imports core (core never imports streams)
    harness   embedded server and child processes for up/chaos/tests: core, streams
    bots      the daemons' runtime: core, streams
    ledger    the analytics daemon: core, streams
    tui       the dashboard: core, streams, ledger (its reports), harness (the screenshot tool)
    bench     benchmarks: core, streams, harness, bots, ledger, tui (each scenario drives one)
    cli       the `corral` command composes everything; nothing imports it

``corral`` itself (``corral/__init__.py``, ``__main__.py``) is the public API over core and
the ``python -m corral`` entry point into cli; its ``contract.py`` generates the wire schemas
from core's Structs and the ledger's request and reply Structs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "streams", "harness", "bots", "ledger", "tui", "bench", "cli", "corral")

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "streams": {"core"},
    "harness": {"core", "streams"},
    "bots": {"core", "streams"},
    "ledger": {"core", "streams"},
    "tui": {"core", "streams", "ledger", "harness"},
    "bench": {"core", "streams", "harness", "bots", "ledger", "tui"},
    "cli": set(PACKAGES) - {"cli", "corral"},
    "corral": {"core", "cli", "ledger"},
}


def _package_of(module: str) -> str | None:
    """``corral.core.names`` -> ``core``; ``corral`` -> ``corral``; anything else -> None."""
    parts = module.split(".")
    if parts[0] != "corral":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "corral"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from corral import cli` names a package too
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names] if node.module == "corral" else []
            out.append((node.lineno, node.module))
    return out


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> where, for every cross-package import."""
    edges: dict[tuple[str, str], list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for line, module in _imports(path):
                target = _package_of(module)
                if target is None or target == pkg or (pkg != "corral" and target == "corral" and module == "corral"):
                    continue
                edges.setdefault((pkg, target), []).append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return edges


def test_every_package_imports_only_the_layers_below_it() -> None:
    """Given every module's imports, when each is checked against ALLOWED, then none points the wrong way."""
    wrong = [where for (src, dst), places in _edges().items() if dst not in ALLOWED[src] for where in places]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_two_packages_import_each_other_even_indirectly() -> None:
    """Given the package import graph, when searched for cycles, then there are none."""
    graph: dict[str, set[str]] = {}
    for src, dst in _edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(p for p in graph if reaches(p, p, {p}))
    assert not cycles, f"packages in an import cycle: {cycles}"


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    """Given a module with an import inside a function, when parsed, then that import is listed."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from corral.cli import main\n    return main\n")
    assert (2, "corral.cli") in _imports(module)
