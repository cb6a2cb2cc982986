"""Sparse datasets (the bundled sample: 16 of 1536 neurons a layer): Next/Previous and the
picker move among neurons with data, an empty neuron offers the nearest ones, related neurons
without data are marked, and the Interesting menu says what each neuron fires on and filters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6 import QtCore, QtWidgets

from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.desk import Desk
from neuron_desk.qt.mainwindow import MainWindow
from tests.qt.conftest import run_until

SAMPLE = "smollm2-135m"


@pytest.fixture
def sample_window(qtbot, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    desk = Desk.open(Paths.at(tmp_path))
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(desk, settings)
    window.resize(1200, 800)
    window.show()
    yield window
    loop.run_until_complete(window.tasks.close())
    loop.run_until_complete(desk.aclose())
    window.close()
    window.deleteLater()
    QtWidgets.QApplication.processEvents()
    desk.close()


def show(window: MainWindow, loop, ref: NeuronRef) -> None:  # type: ignore[no-untyped-def]
    window.browser.go_to(ref)
    run_until(loop, lambda: window.browser.current == ref and window.browser.data is not None)


def test_desk_steps_and_finds_neighbours_among_neurons_with_data(tmp_path: Path) -> None:
    desk = Desk.open(Paths.at(tmp_path))
    try:
        layer3 = desk.available_neurons(SAMPLE, 3)
        assert len(layer3) == 16 and desk.is_sparse(SAMPLE)
        first, second = layer3[0], layer3[1]
        assert desk.step_with_data(first, 1) == second
        assert desk.step_with_data(second, -1) == first
        empty = NeuronRef(SAMPLE, 3, first.index + 1)
        assert desk.step_with_data(empty, 1) == second  # from an empty neuron: the next one
        assert desk.step_with_data(empty, -1) == first
        last = desk.available_neurons(SAMPLE)[-1]
        assert desk.step_with_data(last, 1) == desk.available_neurons(SAMPLE)[0]  # wraps
        nearest = desk.nearest_with_data(empty, 3)
        assert nearest[0] == first and all(n.layer == 3 for n in nearest)
    finally:
        desk.close()


def test_next_and_the_picker_skip_empty_neurons(sample_window: MainWindow, loop) -> None:  # type: ignore[no-untyped-def]
    window = sample_window
    layer3 = window.desk.available_neurons(SAMPLE, 3)
    show(window, loop, layer3[0])
    assert window.picker.data_count.text().strip() == "16 of 1536 neurons with data"
    window.browser.next()
    run_until(loop, lambda: window.browser.data is not None)
    assert window.browser.current == layer3[1]
    window.browser.previous()
    run_until(loop, lambda: window.browser.data is not None)
    assert window.browser.current == layer3[0]
    window.picker.neuron_box.stepBy(1)  # the arrow of the neuron number
    run_until(loop, lambda: window.browser.current == layer3[1] and window.browser.data is not None)


def test_an_empty_neuron_offers_the_nearest_with_data(sample_window: MainWindow, loop) -> None:  # type: ignore[no-untyped-def]
    window = sample_window
    layer3 = window.desk.available_neurons(SAMPLE, 3)
    empty = NeuronRef(SAMPLE, 3, layer3[0].index + 1)
    show(window, loop, empty)
    status = window.dataset_pane.status.text()
    assert "empty" in status and "16 of 1536 neurons of layer 3 have data" in status
    buttons = window.dataset_pane.nearby_buttons
    assert buttons and buttons[0].text() == f"3:{layer3[0].index}"
    assert window.dataset_pane.nearby.isVisible()
    buttons[0].click()
    run_until(loop, lambda: window.browser.current == layer3[0] and window.browser.data is not None)
    assert window.dataset_pane.model.rowCount() > 0
    assert not window.dataset_pane.nearby.isVisible()


def test_related_neurons_without_data_are_marked(sample_window: MainWindow, loop) -> None:  # type: ignore[no-untyped-def]
    window = sample_window
    show(window, loop, NeuronRef(SAMPLE, 3, 24))
    dock = window.related_dock
    listed = list(dock._items)
    marked = dock.without_data()
    assert listed and marked and len(marked) < len(listed)
    have = len(listed) - len(marked)
    assert dock.windowTitle() == f"Related neurons ({have} of {len(listed)} with data)"
    available = set(window.desk.available_neurons(SAMPLE))
    assert all(ref not in available for ref in marked)
    item = dock._items[next(iter(marked))][0]
    assert item.text(0).endswith("∅") and "nearest" in item.toolTip(0)
    # Not a dead end: opening one offers the nearest neurons with data.
    dock._activated(item)
    run_until(loop, lambda: window.browser.data is not None and window.browser.current in marked)
    assert window.dataset_pane.nearby_buttons


def test_interesting_menu_says_what_neurons_fire_on_and_filters(sample_window: MainWindow) -> None:
    menu = sample_window.picker.interesting_menu
    texts = [menu.list.item(i).text() for i in range(menu.list.count())]
    line = next(t for t in texts if t.startswith("1:501"))
    assert "'://'" in line and "high kurtosis" in line  # top tokens and the label
    assert menu.filter("://") >= 1
    assert NeuronRef(SAMPLE, 1, 501) in menu.visible_refs()
    assert all(
        "://" in menu.list.item(i).text() or menu.list.item(i).isHidden()
        for i in range(menu.list.count())
    )
    picked: list[NeuronRef] = []
    menu.picked.connect(picked.append)
    menu.search.setText("://")
    menu.search.returnPressed.emit()
    assert picked and picked[0] == menu.visible_refs()[0]
    assert menu.filter("") == len(sample_window.desk.registry.default().interesting)
