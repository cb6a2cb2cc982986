"""Screenshots of the main window for the README, written to resources/screenshots/.

Run under Xvfb, from the repository root: `xvfb-run -a python packaging/take_screenshots.py`.

1. main-window.png: the app on the bundled sample, as a fresh install opens it.
2. scored-neuron.png: a neuron explained and scored through an OpenAI-compatible endpoint (the
   test suite's fake server on 127.0.0.1, with a synthetic neuron that fires on the letter e).
3. scoring-details.png: the same, real and simulated activations side by side.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import Profile, ProfileConfig
from neuron_desk.qt.app import make_application
from neuron_desk.qt.asyncbridge import new_event_loop
from neuron_desk.qt.mainwindow import MainWindow
from tests.data.conftest import NEURONS, mirror_dataset
from tests.data.mirror import Faults, Mirror, write_public_layout
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import oracle

SCREENSHOTS = ROOT / "resources" / "screenshots"  # not package data: kept out of the wheel


async def until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), timeout)


async def shoot(folder: Path) -> None:
    store = Store.open(folder / "store.sqlite3")
    settings = QtCore.QSettings(str(folder / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    root = folder / "public"
    write_public_layout(root, NEURONS)
    with (
        Mirror(root, Faults()) as mirror,
        FakeServer(FakeOpenAI(neuron=oracle, explanation=" words with the letter e")) as server,
    ):
        registry = Registry(store)
        registry.add(mirror_dataset(mirror.base_url))
        config = ProfileConfig(path=folder / "profiles.json")
        config.put(
            Profile(
                name="vllm-box",
                base_url=server.base_url,
                explainer_model="fake-model",
                simulator_model="fake-model",
            )
        )
        config.default = "vllm-box"
        service = NeuronService(registry, store)
        desk = Desk(store, registry, service, paths=Paths.at(folder), profiles=config)
        window = MainWindow(desk, settings)
        window.resize(1400, 900)
        window.show()
        default = registry.default()
        first = default.interesting[0]
        window.browser.go_to(NeuronRef(default.name, first.layer, first.neuron))
        await until(lambda: window.browser.data is not None)
        await asyncio.sleep(0.5)
        window.grab().save(str(SCREENSHOTS / "main-window.png"))

        window.browser.go_to(NeuronRef("mirror", 0, 2))
        await until(lambda: window.browser.data is not None)
        outcomes: list[str] = []
        window.run_finished.connect(outcomes.append)
        window.generate(3)
        await until(lambda: bool(outcomes), timeout=120)
        await asyncio.sleep(0.5)
        window.grab().save(str(SCREENSHOTS / "scored-neuron.png"))
        window.explanations.side_by_side.setChecked(True)
        await asyncio.sleep(0.5)
        window.grab().save(str(SCREENSHOTS / "scoring-details.png"))
        await window.tasks.close()
        await desk.aclose()
    store.close()


def main() -> None:
    app = make_application([])
    loop = new_event_loop(app)
    asyncio.set_event_loop(loop)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        loop.run_until_complete(shoot(Path(folder)))
    loop.close()  # stops the loop's worker threads before Qt goes away
    print("wrote", ", ".join(str(p.relative_to(ROOT)) for p in sorted(SCREENSHOTS.glob("*.png"))))
    QtWidgets.QApplication.quit()


if __name__ == "__main__":
    main()
