"""Start-up loads only what it needs (issue 12): the desk (what the CLI's `show` and the app
open a neuron with) brings no NumPy, no HTTP client, no LLM stack and no runs; the main window
is built and shows a neuron without them; `neuron_desk.method` keeps its public names."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("numpy", "httpx", "sklearn", "scipy", "tiktoken", "neuron_desk.llm", "neuron_desk.runs")


def loaded_after(script: str) -> set[str]:
    """The heavy modules imported once `script` has run in a fresh interpreter."""
    probe = (
        f"{script}\nimport sys\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or "
        f"any(m == h or m.startswith(h + '.') for h in {HEAVY!r})))"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_desk_imports_nothing_heavy() -> None:
    assert loaded_after("import neuron_desk.desk") == set()


def test_the_method_package_loads_its_names_when_used() -> None:
    assert loaded_after("import neuron_desk.method") == set()
    assert loaded_after("import neuron_desk.method.tokens") == set()
    used = loaded_after("from neuron_desk.method import NeuronRecord, relu")
    assert "numpy" not in used


def test_every_public_name_of_the_method_package_resolves() -> None:
    import neuron_desk.method as method

    for name in method.__all__:
        assert getattr(method, name) is not None, name
    assert set(method.__all__) <= set(dir(method))


def test_the_main_window_shows_a_neuron_without_the_llm_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = f"""
import asyncio
from neuron_desk.core.paths import Paths
from neuron_desk.qt import app as qtapp
from neuron_desk.qt.asyncbridge import run
from neuron_desk.qt.browser import WELCOME_SEEN_KEY
application = qtapp.make_application([])
desk = qtapp.Desk.open(Paths.at({str(tmp_path)!r}), offline=True)
settings = qtapp.open_settings(Paths.at({str(tmp_path)!r}))
settings.setValue(WELCOME_SEEN_KEY, True)
async def main():
    window = qtapp.build_window(desk, settings)
    window.show()
    shown = asyncio.Event()
    window.neuron_shown.connect(lambda *_: shown.set())
    qtapp.open_first_neuron(window)
    await shown.wait()
    window.repaint()
    await qtapp.close_window(window)
    return 0
run(application, main)
desk.close()
"""
    assert loaded_after(script) == set()
