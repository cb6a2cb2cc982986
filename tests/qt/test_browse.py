"""The real main window (offscreen) browsing a dataset mirror over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from PySide6 import QtCore, QtGui

from neuron_desk.core import codec
from neuron_desk.core.model import (
    ActivationRecord,
    NeuronId,
    NeuronSimulationResults,
    TokenLookupTableSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.qt.heatmap import (
    HeatmapDelegate,
    HeatmapRow,
    Palette,
    paint_row,
    plain_tooltip,
    visible_token,
)
from neuron_desk.qt.mainwindow import MainWindow
from tests.data.mirror import Mirror
from tests.qt.conftest import WindowFactory, run_until
from tests.synthetic import neuron_record


def shown(window: MainWindow, key: tuple[str, int, int]) -> bool:
    return window.browser.current == NeuronRef(*key) and window.browser.data is not None


def go_to(window: MainWindow, dataset: str, layer: int, neuron: int) -> None:
    window.browser.go_to(NeuronRef(dataset, layer, neuron))


def cell(view, row: int, column: int) -> str:  # type: ignore[no-untyped-def]
    return str(view.model().index(row, column).data())


def test_open_a_neuron_fills_every_pane(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop
) -> None:
    window = make_window()
    go_to(window, "mirror", 0, 2)
    run_until(loop, lambda: shown(window, ("mirror", 0, 2)))
    assert window.title.text() == "Test mirror · layer 0 · neuron 2"
    assert "fetched from the network" in window.subtitle.text()
    # Dataset pane: 3 sections with records (top 4 + random 2 shown) and their headers.
    model = window.dataset_pane.model
    assert model.rowCount() == 2 + 4 + 2
    expected = neuron_record(seed=2)
    first = model.index(1, 0).data(QtCore.Qt.ItemDataRole.UserRole + 1)
    assert list(first.tokens) == expected.most_positive_activation_records[0].tokens
    # Explanation pane lists the published explanation with its score.
    table = window.explanations.table
    assert table.model().rowCount() == 1
    assert cell(table, 0, 1) == "words with the letter e (0:2)"
    assert cell(table, 0, 0) == "0.42"
    # Top tokens dock: the activation-based list; weights say why they are missing.
    assert window.tokens_dock.by_activation.text(0) == " eager"
    assert window.tokens_dock.filled_tabs() == {0}  # the hidden tab fills when shown
    window.tokens_dock.tabs.setCurrentIndex(1)
    assert (
        "has no top tokens by weight"
        in window.tokens_dock.lists["input_positive"].text(0)
    )
    # Show more: clicking a section header shows all its records.
    model.toggle(0)
    assert model.rowCount() == 2 + 20 + 2


def test_quick_switches_show_only_the_last_neuron(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, mirror: Mirror
) -> None:
    for n in range(1, 4):
        mirror.faults.delay_s[f"collated-activations/0/{n}.json"] = round(0.4 - 0.1 * n, 2)
    window = make_window()
    seen: list[tuple[str, int, int]] = []
    window.neuron_shown.connect(lambda ref: seen.append((ref.dataset, ref.layer, ref.index)))
    for n in range(1, 4):
        go_to(window, "mirror", 0, n)
    run_until(loop, lambda: shown(window, ("mirror", 0, 3)))
    loop.run_until_complete(asyncio.sleep(0.4))  # let any stale load finish, if one survived
    assert seen == [("mirror", 0, 3)]
    first = window.dataset_pane.model.index(1, 0).data(QtCore.Qt.ItemDataRole.UserRole + 1)
    assert list(first.tokens) == neuron_record(seed=3).most_positive_activation_records[0].tokens
    assert cell(window.explanations.table, 0, 1) == "words with the letter e (0:3)"
    assert window.picker.layer_box.value() == 0 and window.picker.neuron_box.value() == 3
    window.browser.back()
    run_until(loop, lambda: shown(window, ("mirror", 0, 2)))
    window.browser.forward()
    run_until(loop, lambda: shown(window, ("mirror", 0, 3)))


def test_offline_on_cached_and_uncached_neurons(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, mirror: Mirror
) -> None:
    window = make_window()
    go_to(window, "mirror", 0, 1)
    run_until(loop, lambda: shown(window, ("mirror", 0, 1)))
    window.offline_action.setChecked(True)
    run_until(loop, lambda: shown(window, ("mirror", 0, 1)))
    assert "from the local store" in window.subtitle.text() and "offline" in window.subtitle.text()
    assert window.dataset_pane.model.rowCount() > 0
    requests = len(mirror.faults.requests)
    go_to(window, "mirror", 0, 5)
    run_until(loop, lambda: shown(window, ("mirror", 0, 5)))
    assert "not available offline" in window.dataset_pane.status.text()
    assert window.dataset_pane.model.rowCount() == 0
    assert len(mirror.faults.requests) == requests


def test_out_of_range_and_errors_go_to_the_status_bar(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop
) -> None:
    window = make_window()
    go_to(window, "mirror", 5, 0)
    assert "no layer 5" in window.statusBar().currentMessage()
    go_to(window, "mirror", 1, 7)  # in range, but the mirror has no files for it
    run_until(loop, lambda: shown(window, ("mirror", 1, 7)))
    assert "has no activation records" in window.dataset_pane.status.text()


def test_export_reads_back(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    window = make_window()
    go_to(window, "mirror", 0, 4)
    run_until(loop, lambda: shown(window, ("mirror", 0, 4)))
    target = tmp_path / "export.jsonl"
    task = window.export_to(str(target))
    assert task is not None
    loop.run_until_complete(task)
    results = codec.loads(target.read_text(), NeuronSimulationResults)
    assert results.neuron_id.neuron_index == 4
    assert [e.explanation for e in results.scored_explanations] == [
        " words with the letter e (0:4)"
    ]
    assert json.loads(Path(f"{target}.provenance.json").read_text())[0]["source"] == "published"


def test_markup_in_tokens_is_text(qtbot, loop: asyncio.AbstractEventLoop) -> None:  # type: ignore[no-untyped-def]
    tokens = ["<b>bold</b>", "<script>alert(1)</script>", "\n", "\t", "a\x00b", ""]
    assert visible_token(tokens[0]) == "<b>bold</b>"
    assert visible_token(tokens[1]) == "<script>alert(1)</script>"
    assert [visible_token(t) for t in tokens[2:]] == ["↵", "⇥", "a\\x00b", "∅"]
    assert plain_tooltip("<b>x</b>") == "<qt>&lt;b&gt;x&lt;/b&gt;</qt>"
    record = ActivationRecord(tokens=tokens, activations=[1.0, 2.0, 0.0, 0.5, 0.1, 0.0])
    image = QtGui.QImage(600, 80, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(image)
    palette = QtGui.QPalette()
    paint_row(
        painter,
        image.rect(),
        HeatmapRow(record.tokens, record.activations, 2.0),
        Palette(palette),
        QtGui.QFont("monospace"),
        False,
    )
    painter.end()
    # The second token is painted at full heat: some pixel carries the hot colour.
    hot = Palette(palette).heat(2.0, 2.0)
    assert any(image.pixelColor(x, 5) == hot for x in range(0, 600, 2))
    assert isinstance(HeatmapDelegate(), HeatmapDelegate)


def test_markup_tokens_in_the_real_window(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, layout: Path
) -> None:
    markup = ["<b>bold</b>", "<script>alert(1)</script>", " &amp;", "<i>"]
    record = neuron_record(seed=11)
    record.neuron_id = NeuronId(1, 1)
    record.most_positive_activation_records[0].tokens[:4] = markup
    (layout / "collated-activations/1/1.json").write_text(codec.dumps(record))
    tokens = TokenLookupTableSummaryOfNeuron(markup, [3.0, 2.0, 1.0, 0.5])
    (layout / "related-tokens/activation-based/1/1.json").write_text(codec.dumps(tokens))
    window = make_window()
    go_to(window, "mirror", 1, 1)
    run_until(loop, lambda: shown(window, ("mirror", 1, 1)))
    row = window.dataset_pane.model.index(1, 0).data(QtCore.Qt.ItemDataRole.UserRole + 1)
    assert list(row.tokens[:4]) == markup
    shown_tokens = [window.tokens_dock.by_activation.text(i) for i in range(4)]
    assert shown_tokens == markup  # the table shows the literal text
    tooltip = window.tokens_dock.by_activation.tooltip(0)
    assert "&lt;b&gt;" in tooltip and "<b>" not in tooltip.removeprefix("<qt>")
    assert not window.grab().isNull()  # painting the row with markup tokens works
