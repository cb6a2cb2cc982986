"""Latents are named as such everywhere, and everything that works for neurons works for them:
a folder dataset of a dictionary (an SAE at two hook points) opened in the real window, explained
and scored against the fake OpenAI server, exported. (The CLI on the same latents:
tests/data/test_cli_latents.py, where `asyncio.run` can't unset the session's Qt loop.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtCore, QtGui

from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.qt.mainwindow import MainWindow
from neuron_desk.qt.runconfirm import ASK_UNPRICED_KEY
from tests.data.test_cli_latents import sae_dataset
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.qt.conftest import DeskFactory, run_until
from tests.qt.test_scoring import profiles_for

LATENT = NeuronRef("toy-sae", 0, 0)


@pytest.fixture
def window(
    qtbot: Any,
    loop: asyncio.AbstractEventLoop,
    store: Store,
    tmp_path: Path,
    fake: tuple[FakeOpenAI, FakeServer],
) -> Iterator[MainWindow]:
    registry = Registry(store, bundled=[])
    registry.add(sae_dataset(tmp_path / "sae"))
    desk = Desk(
        store,
        registry,
        NeuronService(registry, store),
        paths=Paths.at(tmp_path),
        profiles=profiles_for(fake[1].base_url, tmp_path),
    )
    settings = QtCore.QSettings(str(tmp_path / "ui.ini"), QtCore.QSettings.Format.IniFormat)
    settings.setValue(ASK_UNPRICED_KEY, False)
    shown = MainWindow(desk, settings)
    shown.resize(1200, 800)
    shown.show()
    shown.picker.dataset_box.setCurrentIndex(shown.picker.dataset_box.findData("toy-sae"))
    yield shown
    loop.run_until_complete(shown.tasks.close())
    loop.run_until_complete(desk.aclose())
    shown.close()
    shown.deleteLater()


def open_latent(window: MainWindow, loop: asyncio.AbstractEventLoop, ref: NeuronRef) -> None:
    window.browser.go_to(ref)
    run_until(loop, lambda: window.browser.data is not None and window.browser.current == ref)


def test_a_latent_is_named_a_latent_and_explained_scored_and_exported(
    window: MainWindow, loop: asyncio.AbstractEventLoop, store: Store, tmp_path: Path
) -> None:
    open_latent(window, loop, LATENT)
    picker = window.picker
    assert picker.neuron_box.prefix() == "latent " and picker.layer_box.prefix() == "hook point "
    assert picker.go_button.accessibleName() == "Go to latent"
    assert window.title.text() == "Toy SAE · SAE at model.layers.3 · latent 0"
    assert window.windowTitle().startswith("Latent 0:0 · Toy SAE")
    actions = [a.text() for menu in window.menuBar().actions() for a in menu.menu().actions()]
    assert "&Export this latent…" in actions and "&Next latent" in actions
    assert not any("neuron…" in a or a.endswith(" neuron") for a in actions)
    # Records, top tokens and related latents, as for a neuron.
    assert window.dataset_pane.model.rowCount() > 4
    tokens = window.tokens_dock.by_activation
    assert tokens.rowCount() == 1 and "eager" in tokens.text(0)
    related = window.related_dock
    assert related.windowTitle() == "Related latents"
    assert related.tree.headerItem().text(0) == "latent"
    assert related.tree.topLevelItemCount() == 2  # upstream (none), downstream
    assert "latent" in window.explanations.table.accessibleName()
    assert "green: the latent" in window.explanations.legend.text()

    outcomes: list[str] = []
    window.run_finished.connect(outcomes.append)
    window.generate(1)
    run_until(loop, lambda: outcomes != [], timeout=30)
    assert outcomes == ["done"], window.explanations.details.text()
    (row,) = Explanations(store).of(LATENT, source="generated")
    assert row.explanation == "words with the letter e" and row.score is not None
    assert row.score > 0.9

    window.results_dock.show()
    window.refresh_results()
    assert window.results_dock.windowTitle() == "Explained latents (1)"
    header = window.results_dock.table.model().headerData
    assert [header(i, QtCore.Qt.Orientation.Horizontal) for i in (0, 1)] == ["hook point", "latent"]

    path = tmp_path / "latent.jsonl"
    task = window.export_to(str(path))
    assert task is not None
    loop.run_until_complete(task)
    exported = json.loads(path.read_text().splitlines()[0])
    assert exported["neuron_id"]["layer_index"] == 0
    assert exported["neuron_id"]["neuron_index"] == 0
    assert "words with the letter e" in [e["explanation"] for e in exported["scored_explanations"]]
    assert "Exported" in window.statusBar().currentMessage()


def test_an_empty_latent_says_latent(
    window: MainWindow, loop: asyncio.AbstractEventLoop
) -> None:
    for index in (0, 1):  # read from the folder once, so they are stored
        open_latent(window, loop, NeuronRef("toy-sae", 1, index))
    window.browser.set_offline(True)  # sparse: only the latents with data can be shown
    open_latent(window, loop, NeuronRef("toy-sae", 1, 7))
    status = window.dataset_pane.status.text()
    assert "This latent is empty here" in status and "latent 1:7" in status
    assert "neuron" not in status
    assert "2 of 16 latents of SAE at model.layers.9 have data" in status
    window.picker._layer_changed(1)
    assert window.picker.data_count.text().strip() == "2 of 16 latents with data"


def test_picking_a_dataset_of_latents_keeps_naming_the_neuron_shown(
    loop: asyncio.AbstractEventLoop,
    make_desk: DeskFactory,
    settings: QtCore.QSettings,
    tmp_path: Path,
) -> None:
    """The picker follows the dataset picked at once; the panes keep showing the neuron of the
    dataset before until a latent is opened, and so do the words for it (the export and next
    actions act on the neuron shown; the pane's legend is of its activations)."""
    desk = make_desk()
    desk.registry.add(sae_dataset(tmp_path / "sae"))
    window = MainWindow(desk, settings)
    window.resize(1200, 800)
    window.show()

    def action_texts() -> list[str]:
        return [a.text() for menu in window.menuBar().actions() for a in menu.menu().actions()]

    try:
        open_latent(window, loop, NeuronRef("mirror", 0, 1))
        box = window.picker.dataset_box
        box.setCurrentIndex(box.findData("toy-sae"))
        assert window.picker.neuron_box.prefix() == "latent "
        assert "&Pick a latent" in action_texts()
        assert window.title.text().endswith("neuron 1")
        assert "&Export this neuron…" in action_texts() and "&Next neuron" in action_texts()
        assert "green: the neuron" in window.explanations.legend.text()
        assert "neuron" in window.explanations.table.accessibleName()

        open_latent(window, loop, LATENT)
        assert "&Export this latent…" in action_texts() and "&Next latent" in action_texts()
        assert "green: the latent" in window.explanations.legend.text()
        box.setCurrentIndex(box.findData("mirror"))  # and back: the latent is still shown
        assert "&Pick a neuron" in action_texts() and "&Next latent" in action_texts()
        assert "green: the latent" in window.explanations.legend.text()
    finally:
        loop.run_until_complete(window.tasks.close())
        window.close()
        window.deleteLater()


def test_a_latent_without_related_latents_says_so_in_words_that_wrap(
    window: MainWindow, loop: asyncio.AbstractEventLoop
) -> None:
    related = window.related_dock
    open_latent(window, loop, NeuronRef("toy-sae", 0, 1))  # records, no related file
    said = related.shown_message()
    assert said == "latent 0:1 of Toy SAE has no related latents"
    assert related.message.isVisible() and not related.tree.isVisible()
    placeholder = QtGui.QPalette.ColorRole.PlaceholderText  # grey, as an empty list's reason
    assert related.message.foregroundRole() == placeholder
    # A narrow dock wraps the reason onto more lines instead of eliding its middle.
    line = related.message.fontMetrics().height()
    assert related.message.heightForWidth(120) >= 2 * line
    open_latent(window, loop, LATENT)  # one with related latents: the list again
    assert related.shown_message() == "" and related.tree.isVisible()
    assert related.tree.topLevelItemCount() == 2
