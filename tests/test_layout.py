"""The package layout keeps its promises: dependencies point down, no import cycles.

Modules are shaped by what they do, so there is no line count here."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "longsep"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_nothing_outside_cli_imports_cli():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("cli/") or path.name == "__main__.py":  # entry points
            continue
        offenders += [f"{rel}: {m}" for m in _imports(path) if m.startswith("longsep.cli")]
    assert not offenders


def test_cli_modules_do_not_import_each_other():
    offenders = []
    for path in (PACKAGE / "cli").glob("*.py"):
        own = f"longsep.cli.{path.stem}"
        for module in _imports(path):
            if module.startswith("longsep.cli.") and module not in (own, "longsep.cli.common"):
                offenders.append(f"{path.name}: {module}")
    assert not offenders


def test_lower_layers_do_not_import_upper_ones():
    upper = ("longsep.training", "longsep.inference", "longsep.evaluation", "longsep.study")
    for layer in ("models", "data"):
        for path in (PACKAGE / layer).rglob("*.py"):
            bad = [m for m in _imports(path) if m.startswith(upper)]
            assert not bad, f"{path}: {bad}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports when it runs (function-level imports
    included, ``if TYPE_CHECKING:`` blocks not), each resolved to the most specific module."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: _runtime_imports(p, set(paths)) - {m} for m, p in paths.items()}
    assert graph["longsep.store"] >= {"longsep.store_openunmix"}  # the check sees imports
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles(graph) == []


def test_one_atomic_write():
    writers = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "os.replace(" in path.read_text()
    ]
    # io.py (files and whole folders); audio.AudioWriter streams into its own temp file;
    # LastCheckpoint renames what Lightning wrote to io.temp_sibling
    assert sorted(writers) == ["audio/encode.py", "io.py", "training/callbacks.py"]
