"""The app under load (offscreen): cold start to a painted window, neuron switch time from the
store to painted panes (median and p95 over 50 switches), and memory after browsing 100 neurons
(`--neurons 1000` for the soak run: memory growth over 1,000 neurons).

Neurons are GPT-2 XL-sized (200 records x 64 tokens), already in the store, as when browsing
cached neurons. Targets: cold start under 3 s, switch median under 100 ms and p95 under
200 ms, memory growth under 100 MB over 100 neurons.

    python tests/benchmarks/app_browsing.py [--neurons 1000]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]  # the repository root
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import gpt2_xl_sized_record
from PySide6 import QtCore, QtWidgets

from neuron_desk.core import codec
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import ALL_KINDS, Dataset, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.qt.asyncbridge import new_event_loop
from neuron_desk.qt.mainwindow import MainWindow

N_NEURONS = int(sys.argv[sys.argv.index("--neurons") + 1]) if "--neurons" in sys.argv else 100


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill_store(store: Store) -> Dataset:
    dataset = Dataset(
        name="bench",
        title="Benchmark",
        model="synthetic",
        n_layers=N_NEURONS // 64 + 1,
        n_neurons=64,
        kinds=ALL_KINDS,
        tokenizer="gpt2",
        folder="/nonexistent",
    )
    for i in range(N_NEURONS):
        layer, neuron = divmod(i, 64)
        record = gpt2_xl_sized_record(layer, neuron, seed=i)
        store.put_file(NeuronRef("bench", layer, neuron), "activations", codec.dumps(record), "benchmark")
    return dataset


def cold_start() -> float:
    """Seconds from process start to the first painted window with a neuron's panes filled."""
    script = (
        "import time; t0 = time.perf_counter()\n"
        "import os; os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')\n"
        "import asyncio, sys\n"
        "from neuron_desk.qt import app as qtapp\n"
        "from neuron_desk.core.paths import Paths\n"
        "from neuron_desk.core.refs import NeuronRef\n"
        "application = qtapp.make_application([])\n"
        "desk, settings = qtapp.open_desk(Paths.at(sys.argv[1]))\n"
        "async def main():\n"
        "    window = qtapp.build_window(desk, settings)\n"
        "    window.show()\n"
        "    done = asyncio.Event()\n"
        "    window.neuron_shown.connect(lambda *a: done.set())\n"
        "    window.browser.go_to(NeuronRef('bench', 0, 1))\n"
        "    await done.wait()\n"
        "    window.repaint()\n"
        "    print(time.perf_counter() - t0)\n"
        "    await qtapp.close_window(window)\n"
        "    return 0\n"
        "from neuron_desk.qt.asyncbridge import run\n"
        "run(application, main)\n"
        "desk.close()\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "store.sqlite3")
        Registry(store, bundled=[]).add(fill_store(store))
        store.close()
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", script, folder],  # the data directory: store and settings
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        wall = time.perf_counter() - start
    inside = float(out.stdout.strip().splitlines()[-1])
    print(
        f"cold start to a painted window with a neuron: {wall:.2f} s (interpreter start included); "
        f"{inside:.2f} s after the interpreter started"
    )
    return wall


def switching() -> None:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loop = new_event_loop(app)
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "store.sqlite3")
        registry = Registry(store, bundled=[])
        registry.add(fill_store(store))
        desk = Desk(store, registry, NeuronService(registry, store), paths=Paths.at(folder))
        settings = QtCore.QSettings(str(Path(folder) / "s.ini"), QtCore.QSettings.Format.IniFormat)
        window = MainWindow(desk, settings)
        window.resize(1400, 900)
        window.show()
        shown = asyncio.Event()
        window.neuron_shown.connect(lambda *a: shown.set())

        async def visit(i: int) -> float:
            layer, neuron = divmod(i, 64)
            shown.clear()
            start = time.perf_counter()
            window.browser.go_to(NeuronRef("bench", layer, neuron))
            await shown.wait()
            window.repaint()  # paint every pane now, as the screen would
            return (time.perf_counter() - start) * 1000

        loop.run_until_complete(visit(0))
        before = rss_mb()
        times = [loop.run_until_complete(visit(i)) for i in range(1, 51)]
        for i in range(51, N_NEURONS):
            loop.run_until_complete(visit(i))
        after = rss_mb()
        view = window.dataset_pane.view  # a repaint from the cached layouts: one frame's work
        view.model().toggle(0)  # Top activations: all 50 records, the viewport full of tokens
        view.doItemsLayout()
        view.viewport().repaint()
        paints = []
        for _ in range(50):
            start = time.perf_counter()
            view.viewport().repaint()
            paints.append((time.perf_counter() - start) * 1000)
        paints.sort()
        loop.run_until_complete(window.tasks.close())
        loop.run_until_complete(desk.aclose())
        store.close()
    loop.close()
    times.sort()
    p95 = times[int(0.95 * len(times)) - 1]
    print(
        f"neuron switch, store to painted panes: median {statistics.median(times):.1f} ms, "
        f"p95 {p95:.1f} ms over 50 switches (target: median < 100 ms, p95 < 200 ms)"
    )
    print(
        f"repaint of the activations pane (full of tokens, layouts cached): median "
        f"{statistics.median(paints):.1f} ms, p95 {paints[int(0.95 * len(paints)) - 1]:.1f} ms "
        "(frame budget: 16 ms)"
    )
    print(
        f"memory: {before:.0f} MB after the first neuron, {after:.0f} MB after {N_NEURONS} "
        f"neurons (growth {after - before:+.0f} MB; target < 100 MB)"
    )


if __name__ == "__main__":
    cold_start()
    switching()
