"""The direction of imports: nothing outside neuron_desk/qt imports PySide6 or qasync."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "neuron_desk"
QT_MODULES = {"PySide6", "qasync", "shiboken6"}
# Which layers each layer may import: qt and cli on top; llm uses the method (token counts,
# simulator choice) and the store (response cache, ledger); method and data only the core.
ALLOWED = {
    "core": {"core"},
    "method": {"core", "method"},
    "data": {"core", "data"},
    "llm": {"core", "llm", "method", "data"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_qt_is_imported_only_under_qt() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in PACKAGE.rglob("*.py")
        if "qt" not in path.relative_to(PACKAGE).parts[:1]
        for name in imports_of(path)
        if name.split(".")[0] in QT_MODULES
    ]
    assert offenders == []


def test_layers_import_only_downwards() -> None:
    offenders = []
    for layer, allowed in ALLOWED.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in imports_of(path):
                parts = name.split(".")
                if parts[0] == "neuron_desk" and len(parts) > 1 and parts[1] not in allowed:
                    offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert offenders == []
