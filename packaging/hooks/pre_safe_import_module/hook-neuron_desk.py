"""PyInstaller pre-safe-import hook for neuron_desk: where neuron_desk.resources lives.

The package neuron_desk.resources is the repository's top-level resources/ folder (pyproject's
`package-dir` maps it; an installed wheel has it inside neuron_desk/). PyInstaller's analysis
looks for submodules in the package's own folder only, so the repository root is added to
neuron_desk's search path: neuron_desk.resources is then found as resources/__init__.py. Every
other submodule is still found in neuron_desk/ first.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # packaging/hooks/pre_safe_import_module/ -> root


def pre_safe_import_module(api):  # type: ignore[no-untyped-def]
    """Append the repository root to neuron_desk's package path, for resources/."""
    if (ROOT / "resources" / "__init__.py").is_file():
        api.append_package_path(str(ROOT))
