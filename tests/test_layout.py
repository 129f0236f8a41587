"""The package layout keeps its promises: dependencies point down, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "longsep"
LONG_ALLOWED = {"data/synth.py"}  # data generators may be long
MAX_LINES = 450  # "about 400"


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


def test_modules_stay_small():
    long = {
        path.relative_to(PACKAGE).as_posix(): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert set(long) <= LONG_ALLOWED, long


def test_one_atomic_write():
    writers = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "os.replace(" in path.read_text()
    ]
    # io.py (files and whole folders); audio.AudioWriter streams into its own temp file;
    # LastCheckpoint renames what Lightning wrote to io.temp_sibling
    assert sorted(writers) == ["audio/encode.py", "io.py", "training/callbacks.py"]
