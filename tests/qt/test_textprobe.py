"""Test your own text, in the real window: a dataset built from a tiny random model whose files
are on disk (loaded by the same `load_model` as any user's model), text pasted and run, the
activations painted, the missing build extra named, user records kept apart and reopened, and
the shown explanation scored against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.builder import live
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import ProfileConfig
from neuron_desk.qt.datasetpane import YOUR_TEXTS
from neuron_desk.qt.mainwindow import MainWindow
from neuron_desk.qt.runconfirm import ASK_UNPRICED_KEY, RunConfirmation
from neuron_desk.qt.textprobe import RUN_TASK
from tests.builder.test_builder import _build, _tiny
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.qt.conftest import run_until
from tests.qt.test_scoring import profiles_for
from tests.synthetic import oracle

TEXT = "the <b>quick</b> brown foxes jumped over the lazy dogs"
UNIT = NeuronRef("tiny", 0, 5)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset built from a tiny model, and that model saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny")
    hf = _tiny("llama")
    model_dir = folder / "model"
    hf.model.save_pretrained(model_dir)
    hf.tokenizer.save_pretrained(model_dir)
    return _build(hf, folder, layers=(0, 1)), model_dir


@pytest.fixture
def open_window(
    qtbot: Any, loop: asyncio.AbstractEventLoop, built: tuple[Path, Path], tmp_path: Path
) -> Iterator[Callable[..., MainWindow]]:
    """Windows over a desk whose one dataset is the tiny build (its model chosen by path)."""
    windows: list[MainWindow] = []
    stores: list[Store] = []

    def make(profiles: ProfileConfig | None = None) -> MainWindow:
        store = Store.open(tmp_path / "store.sqlite3")
        stores.append(store)
        registry = Registry(store, bundled=[built[0]])
        desk = Desk(
            store,
            registry,
            NeuronService(registry, store),
            paths=Paths.at(tmp_path),
            profiles=profiles or ProfileConfig(path=tmp_path / "profiles.json"),
        )
        desk.set_probe_model("tiny", built[1])
        settings = QtCore.QSettings(str(tmp_path / "ui.ini"), QtCore.QSettings.Format.IniFormat)
        window = MainWindow(desk, settings)
        window.resize(1200, 800)
        window.show()
        windows.append(window)
        window.browser.go_to(UNIT)
        run_until(loop, lambda: window.browser.data is not None)
        return window

    yield make
    for window in windows:
        loop.run_until_complete(window.tasks.close())
        loop.run_until_complete(window.desk.aclose())
        window.close()
        window.deleteLater()
    for store in stores:
        store.close()


def run_text(window: MainWindow, loop: asyncio.AbstractEventLoop, text: str = TEXT) -> None:
    panel = window.probe_dock.panel
    window.probe_dock.open()
    panel.text.setPlainText(text)
    panel.run_button.click()
    run_until(loop, lambda: not window.tasks.running(RUN_TASK), timeout=60)


def test_pasted_text_is_run_and_painted_like_the_excerpts(
    open_window: Callable[..., MainWindow], loop: asyncio.AbstractEventLoop, built: Any
) -> None:
    window = open_window()
    panel = window.probe_dock.panel
    run_text(window, loop)
    row = panel.rows.row()
    assert row is not None, panel.status.text()
    assert "".join(row.tokens) == TEXT  # the markup is text: tokens, painted, never parsed
    # The values are the builder's: the same model, tokenization and hook, run directly.
    reference = live.TextProbe(window.desk.dataset("tiny"), built[1])
    assert (list(row.tokens), list(row.activations)) == reference.activations(UNIT, TEXT)
    record = window.browser.data.record.value  # type: ignore[union-attr]
    assert row.scale == pytest.approx(record.max_activation)  # the unit's scale, as excerpts
    assert "tokens · max" in panel.status.text()
    assert panel.status.textFormat() == QtCore.Qt.TextFormat.PlainText
    image = panel.view.viewport().grab().toImage()
    colours = {
        image.pixelColor(x, y).rgb()
        for x in range(0, image.width(), 3)
        for y in range(0, min(image.height(), 60), 3)
    }
    assert len(colours) > 3  # token boxes in heat colours and their text were painted
    assert panel.add_button.isEnabled() and panel.score_button.isEnabled()


def test_without_the_build_extra_the_panel_says_how_to_get_it(
    open_window: Callable[..., MainWindow],
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "build_extra_missing", lambda: True)
    window = open_window()
    run_text(window, loop)
    panel = window.probe_dock.panel
    assert panel.status.text() == live.BUILD_EXTRA_MISSING
    assert panel.rows.row() is None and not panel.add_button.isEnabled()
    assert panel.run_button.isEnabled()


def test_a_dataset_without_a_known_model_asks_for_one(
    open_window: Callable[..., MainWindow], loop: asyncio.AbstractEventLoop, built: Any
) -> None:
    window = open_window()
    panel = window.probe_dock.panel
    panel.set_model("tiny", None)  # forget the chosen folder: the tiny model ships nowhere
    run_text(window, loop)
    assert "choose its model folder or GGUF file" in panel.status.text()
    panel.set_model("tiny", str(built[1]))
    assert window.desk.probe_model("tiny") == str(built[1])
    run_text(window, loop)
    assert panel.rows.row() is not None, panel.status.text()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_user_record_is_kept_apart_and_reappears_after_reopening(
    open_window: Callable[..., MainWindow], loop: asyncio.AbstractEventLoop, built: Any
) -> None:
    before = _digest(built[0])
    window = open_window()
    run_text(window, loop)
    shown = window.probe_dock.panel.rows.row()
    assert shown is not None
    window.probe_dock.panel.add_button.click()
    (user,) = window.desk.user_records_of(UNIT)
    assert user.record.tokens == list(shown.tokens)
    assert user.provenance["source"] == "your text" and user.provenance["date"]
    assert user.provenance["model"] == str(built[1])
    model = window.dataset_pane.model
    headers = [model.index(r).data() for r in range(model.rowCount())]
    assert any(str(h).startswith(YOUR_TEXTS) for h in headers)
    # Nothing of the dataset changed: its file is the same, the store holds no file of it.
    assert _digest(built[0]) == before
    assert window.desk.store.stored_neurons("tiny", "activations") == []

    again = open_window()  # a new desk over the same store
    (kept,) = again.desk.user_records_of(UNIT)
    assert kept.record == user.record
    pane = again.dataset_pane.model
    headers = [pane.index(r).data() for r in range(pane.rowCount())]
    assert any(str(h).startswith(YOUR_TEXTS) for h in headers)
    assert again.desk.user_records_of(NeuronRef("tiny", 0, 6)) == []


@pytest.fixture
def explained(
    open_window: Callable[..., MainWindow],
    loop: asyncio.AbstractEventLoop,
    fake: tuple[FakeOpenAI, FakeServer],
    tmp_path: Path,
) -> tuple[MainWindow, FakeOpenAI]:
    """A window over the fake endpoint, an explanation shown, a text run through the model."""
    server_fake, server = fake
    window = open_window(profiles_for(server.base_url, tmp_path))
    window.desk.explanations.add(UNIT, "words with the letter e", None, "user", {})
    window.browser.reload()
    run_until(loop, lambda: window.explanations.shown_explanation() is not None)
    run_text(window, loop, "every eager engineer tested seven experiments")
    return window, server_fake


def test_the_shown_explanation_is_scored_on_the_text(
    explained: tuple[MainWindow, FakeOpenAI], loop: asyncio.AbstractEventLoop
) -> None:
    window, server_fake = explained
    panel = window.probe_dock.panel
    window.settings.setValue(ASK_UNPRICED_KEY, False)  # asking is the next test's
    panel.score_button.click()
    run_until(loop, lambda: "score on this text" in panel.status.text(), timeout=30)
    row = panel.rows.row()
    assert row is not None and row.simulated is not None
    assert len(row.simulated) == len(row.tokens)
    expected = np.array(oracle(list(row.tokens)), dtype=float)
    assert np.argmax(row.simulated) == np.argmax(expected)  # the fake simulates the letter e
    assert "words with the letter e" in panel.status.text()
    assert "fake-model" in panel.status.text()
    assert server_fake.requests  # simulated by the endpoint, not made up here
    # The score on one text is shown, not stored as the explanation's score.
    rows = window.desk.explanations.of(UNIT)
    assert [r.explanation for r in rows] == ["words with the letter e"]
    panel.add_button.click()
    (user,) = window.desk.user_records_of(UNIT)
    assert user.provenance["explanation"] == "words with the letter e"
    assert user.provenance["simulator_model"] == "fake-model" and user.provenance["simulator"]
    QtGui.QGuiApplication.processEvents()


def test_scoring_on_the_text_asks_first_and_cancel_sends_nothing(
    explained: tuple[MainWindow, FakeOpenAI], loop: asyncio.AbstractEventLoop
) -> None:
    """Like every run to a billable endpoint: the estimate, then a yes (unpriced: asked)."""
    window, server_fake = explained
    panel = window.probe_dock.panel
    sent = len(server_fake.requests)
    panel.score_button.click()
    run_until(loop, lambda: panel.confirmation is not None and panel.confirmation.isVisible())
    confirmation = panel.confirmation
    assert isinstance(confirmation, RunConfirmation)
    said = " ".join(label.text() for label in confirmation.findChildren(QtWidgets.QLabel))
    assert "request(s) to" in said and "127.0.0.1" in said
    confirmation.reject()
    run_until(loop, lambda: "nothing was sent" in panel.status.text())
    assert len(server_fake.requests) == sent
    assert panel.rows.row() is not None and panel.rows.row().simulated is None
    panel.score_button.click()
    run_until(
        loop,
        lambda: panel.confirmation is not confirmation and panel.confirmation.isVisible(),
    )
    panel.confirmation.accept()
    run_until(loop, lambda: "score on this text" in panel.status.text(), timeout=30)
    assert len(server_fake.requests) > sent
