"""Start-up as users feel it, each as a ratio to a baseline measured in the same run (issue 12):

- `neuron-desk --help` and `--version`: ≤ 10× `python -c pass`;
- `neuron-desk show <neuron of the bundled sample> --offline`: ≤ 12× `python -c pass`;
- the app (the real `qt.app` start: desk, profiles, main window, first neuron) until its first
  neuron is painted: ≤ 4× an empty QMainWindow of the same size, painted.

Every figure is the median of several runs, the commands taken in turn (so load on a shared
machine falls on all alike). Times run from spawning the process to its exit (CLI) or to the
line it prints once painted (app, baseline window). A returning user's home: the store exists,
the welcome page was seen; .pyc files written (as an install has them) by a first round that
is not counted. Offline, headless (QT_QPA_PLATFORM=offscreen).

    python tests/benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import bench, median

RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 7
NAME = "startup"

EMPTY_WINDOW = """
import sys
from PySide6 import QtWidgets
app = QtWidgets.QApplication([])
window = QtWidgets.QMainWindow()
window.resize(1200, 800)
window.show()
window.repaint()
print("painted", flush=True)
"""

APP = """
import asyncio
from neuron_desk.qt import app as qtapp

application = qtapp.make_application([])
desk, settings = qtapp.open_desk()
painted = asyncio.Event()

def shown(window):
    window.repaint()
    if not painted.is_set():
        print("painted", window.browser.current.short, flush=True)
    painted.set()

async def main():
    window, runner = await qtapp.open_window(desk, settings, shown)
    await painted.wait()
    await runner  # the LLM runner starts after the first paint, as in the app
    await qtapp.close_window(window)
    return 0

from neuron_desk.qt.asyncbridge import run
run(application, main)
desk.close()
"""

SEEN = """
from PySide6 import QtCore
from neuron_desk.core.paths import Paths
from neuron_desk.qt.welcome import SEEN_KEY
settings = QtCore.QSettings(str(Paths.from_env().settings), QtCore.QSettings.Format.IniFormat)
settings.setValue(SEEN_KEY, True)
settings.sync()
"""


def entry_point() -> list[str]:
    """The installed `neuron-desk` script beside this interpreter, else `python -m`."""
    script = Path(sys.executable).with_name("neuron-desk")
    return [str(script)] if script.exists() else [sys.executable, "-m", "neuron_desk"]


def until_exit(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to exit (output discarded); the command must succeed."""
    start = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def until_painted(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to the "painted" line it prints (it then exits by itself)."""
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as process:
            assert process.stdout is not None
            elapsed = None
            for line in process.stdout:
                if line.startswith("painted") and elapsed is None:
                    elapsed = time.perf_counter() - start
        if process.returncode or elapsed is None:
            errors.seek(0)
            raise RuntimeError(f"{command[:3]} failed ({process.returncode}): {errors.read()[-2000:]}")
    return elapsed


def first_sample_neuron(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [*entry_point(), "neurons", "smollm2-135m"], env=env, capture_output=True, text=True,
        check=True,
    )
    return out.stdout.split()[:2]


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "NEURON_DESK_HOME": home, "QT_QPA_PLATFORM": "offscreen"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an install has its .pyc files: so do we
        neuron = first_sample_neuron(env)  # also creates the store
        subprocess.run([sys.executable, "-c", SEEN], env=env, check=True)
        cli = entry_point()
        timed = {
            "python -c pass": lambda: until_exit([sys.executable, "-c", "pass"], env),
            "--help": lambda: until_exit([*cli, "--help"], env),
            "--version": lambda: until_exit([*cli, "--version"], env),
            "show --offline": lambda: until_exit(
                [*cli, "show", "smollm2-135m", *neuron, "--offline"], env
            ),
            "empty window": lambda: until_painted([sys.executable, "-c", EMPTY_WINDOW], env),
            "app": lambda: until_painted([sys.executable, "-c", APP], env),
        }
        for work in timed.values():  # warm the file cache and the .pyc files
            work()
        times: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(RUNS):
            for name, work in timed.items():
                times[name].append(work())
    ms = {name: median(values) * 1000 for name, values in times.items()}
    for name, value in ms.items():
        print(f"{name}: median {value:.0f} ms of {RUNS}")
    python, window = ms["python -c pass"], ms["empty window"]
    runs = f"medians of {RUNS} runs"
    for name, what, limit in (
        ("--help", "neuron-desk --help", 10),
        ("--version", "neuron-desk --version", 10),
        ("show --offline", f"neuron-desk show smollm2-135m {' '.join(neuron)} --offline", 12),
    ):
        bench(
            NAME, what, ms[name] / python, "×python", limit,
            note=f"{ms[name]:.0f} ms; python -c pass {python:.0f} ms; {runs}",
        )
    bench(
        NAME, "app: first neuron painted", ms["app"] / window, "×empty window", 4,
        note=(
            f"{ms['app']:.0f} ms; an empty painted 1200×800 QMainWindow {window:.0f} ms; "
            f"returning user, bundled sample, offscreen; {runs}"
        ),
    )


if __name__ == "__main__":
    main()
