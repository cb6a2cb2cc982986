"""A neuron switch within a frame (issue 12): what was cut from it stays right. No raster fill
threads in the app; heatmap rows painted as colour runs and prepared texts show the same
colours and plain text; the top-token lists fill with one reset, make tooltips when asked and
keep a fixed value column; the related neurons' first column fits its texts; the neuron shown
is kept in the settings after the picks, not at each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.refs import NeuronRef
from neuron_desk.qt.browser import BrowserState
from neuron_desk.qt.docks import TokenList
from neuron_desk.qt.heatmap import (
    PADDING,
    HeatmapRow,
    Palette,
    font_key,
    layout_row,
    paint_row,
    static_text,
    static_texts,
)
from neuron_desk.qt.mainwindow import MainWindow
from tests.qt.conftest import WindowFactory, run_until
from tests.qt.test_browser import browser, ref, wait_loaded  # noqa: F401 - a fixture
from tests.qt.test_sparse import sample_window  # noqa: F401 - a fixture

FONT = QtGui.QFont("DejaVu Sans", 10)

THREADS_AFTER_PAINTING = textwrap.dedent(
    """
    import os, sys
    from PySide6 import QtWidgets
    if sys.argv[1] == "app":
        from neuron_desk.qt.app import make_application
        app = make_application([])
    else:
        app = QtWidgets.QApplication([])
    table = QtWidgets.QTableWidget(60, 3)
    table.resize(400, 900)
    before = len(os.listdir("/proc/self/task"))
    table.show()
    app.processEvents()
    for _ in range(5):
        table.repaint()
    print(before, len(os.listdir("/proc/self/task")))
    """
)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_the_app_paints_without_qts_fill_thread_pool() -> None:
    """Qt splits tall fills over a thread pool (its threads appear at the first big paint);
    the app's application does not, a bare QApplication does (so the check can fail)."""
    env = {k: v for k, v in os.environ.items() if k != "QT_NO_GUI_THREADPOOL"}
    env["QT_QPA_PLATFORM"] = "offscreen"

    def threads(kind: str) -> tuple[int, int]:
        run = subprocess.run(
            [sys.executable, "-c", THREADS_AFTER_PAINTING, kind],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        before, after = run.stdout.split()
        return int(before), int(after)

    before, after = threads("app")
    assert after == before
    before, after = threads("bare")
    assert after > before


def pixel(image: QtGui.QImage, x: int, y: int) -> int:
    return image.pixelColor(x, y).rgb()


def test_a_row_paints_each_tokens_colour_and_its_text(qapp) -> None:  # type: ignore[no-untyped-def]
    """Boxes of one colour side by side are one run; each box still has its token's colour,
    and every token's text is drawn inside its box."""
    tokens = [" cold", " cold", " hot", " cold", " warm"]
    row = HeatmapRow(tokens, [0.0, 0.0, 1.0, 0.0, 0.5], 1.0)
    palette = Palette(QtWidgets.QApplication.palette())
    layout = layout_row(row, FONT, 600, False)
    image = QtGui.QImage(600, layout.height, QtGui.QImage.Format.Format_ARGB32)
    image.fill(QtGui.QColor("magenta"))
    painter = QtGui.QPainter(image)
    paint_row(painter, QtCore.QRect(0, 0, 600, layout.height), row, palette, FONT, False)
    painter.end()
    colours = palette.token_colours(row)
    for i, _text, x, y, w in layout.boxes:
        background = colours[i][0].rgb()
        assert pixel(image, x, y) == background  # top-left corner: no glyph there
        assert pixel(image, x + w - 1, y + layout.text_height - 1) == background
        inside = {
            pixel(image, px, py)
            for px in range(x, x + w)
            for py in range(y, y + layout.text_height)
        }
        assert len(inside) > 1, tokens[i]  # some of the text's pixels differ from the box
    after = layout.boxes[-1][2] + layout.boxes[-1][4]
    assert pixel(image, after + 2, PADDING + 2) == QtGui.QColor("magenta").rgb()  # nothing beyond
    hot, cold = colours[2], colours[0]
    assert hot[0].rgb() != cold[0].rgb()
    assert colours[0] is colours[1] and colours[0][1] is colours[3][1]  # shared pairs


def test_token_texts_are_prepared_as_plain_text(qapp) -> None:  # type: ignore[no-untyped-def]
    texts = static_texts(FONT)
    static = static_text(texts, "<b>bold</b>")
    assert static.textFormat() == QtCore.Qt.TextFormat.PlainText
    assert static.text() == "<b>bold</b>"
    assert static_text(texts, "<b>bold</b>") is static  # prepared once


def test_a_fonts_key_is_remembered_only_while_the_font_stays_the_same(qapp) -> None:  # type: ignore[no-untyped-def]
    font = QtGui.QFont("DejaVu Sans", 10)
    assert font_key(font) == font.key()
    font.setPointSize(13)  # the caller changes its font: a new key, not the remembered one
    assert font_key(font) == font.key() != QtGui.QFont("DejaVu Sans", 10).key()
    bold = QtGui.QFont(font)
    bold.setBold(True)
    assert font_key(bold) == bold.key() and font_key(font) == font.key()


def test_token_lists_fill_with_one_reset_and_make_tooltips_when_asked(qtbot) -> None:  # type: ignore[no-untyped-def]
    table = TokenList("mean activation")
    qtbot.addWidget(table)
    table.resize(260, 600)
    table.show()
    resets: list[int] = []
    inserts: list[int] = []
    table.pairs.modelReset.connect(lambda: resets.append(1))
    table.pairs.rowsInserted.connect(lambda *_: inserts.append(1))
    pairs = [(f" tok{i}", 1.0 - i / 50) for i in range(50)] + [("<i>", -0.5)]
    table.set_pairs(pairs, "none")
    assert resets == [1] and inserts == []
    assert table.rowCount() == 51
    assert table.text(0) == " tok0" and table.text(0, 1) == "1"
    assert table.text(50) == "<i>"
    tooltip = table.tooltip(50)
    assert "&lt;i&gt;" in tooltip and "<i>" not in tooltip.removeprefix("<qt>")
    background = table.pairs.index(0, 0).data(QtCore.Qt.ItemDataRole.BackgroundRole)
    weaker = table.pairs.index(40, 0).data(QtCore.Qt.ItemDataRole.BackgroundRole)
    assert background != weaker  # the strength is a colour
    # The value column keeps its width for short values; a long one widens it.
    short = table.columnWidth(1)
    assert short >= table.fontMetrics().horizontalAdvance("−0.000")
    table.set_pairs([(" a", 1234567.0), (" b", 1.0)], "none")
    assert table.text(0, 1) == "1.23e+06"
    assert table.columnWidth(1) >= table.fontMetrics().horizontalAdvance("1.23e+06") > short - 10
    table.set_pairs([], "no activation-based top tokens")
    assert table.rowCount() == 1 and table.text(0) == "no activation-based top tokens"
    assert table.columnSpan(0, 0) == 2
    table.set_pairs(pairs, "none")
    assert table.columnSpan(0, 0) == 1 and table.columnWidth(1) == short


def test_token_list_cells_are_painted_as_the_model_says(qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A token list paints each cell in view from the model in one pass: the strength's colour
    behind the token, the text in its colour (the view's for values), a selected row or a
    selected cell alone, and a token too long for its cell elided in the middle."""
    table = TokenList("mean activation")
    qtbot.addWidget(table)
    table.resize(300, 400)
    table.show()
    QtWidgets.QApplication.processEvents()
    long = " " + "x" * 120 + "END"
    table.set_pairs([(" hot", 5.0), (" warm", 2.0), (long, 0.1)], "none")
    image = table.viewport().grab().toImage()
    rect = table.visualRect(table.pairs.index(0, 0))
    hot = table.pairs.index(0, 0).data(QtCore.Qt.ItemDataRole.BackgroundRole)
    text_colour = table.pairs.index(0, 0).data(QtCore.Qt.ItemDataRole.ForegroundRole)
    inside = {
        image.pixel(x, y)
        for x in range(rect.left(), rect.right())
        for y in range(rect.top() + 1, rect.bottom())
    }
    assert hot.rgb() in inside and text_colour.rgb() in inside  # the colour, the token on it
    value = table.visualRect(table.pairs.index(0, 1))
    value_pixels = {
        image.pixel(x, y)
        for x in range(value.left(), value.right())
        for y in range(value.top() + 1, value.bottom())
    }
    assert len(value_pixels) > 2 and hot.rgb() not in value_pixels  # a text, not coloured
    # The long token: its end is shown (elided in the middle), and it stays in its cell.
    import neuron_desk.qt.docks as docks

    drawn: list[str] = []
    original = docks.static_text

    def recording(texts, text):  # type: ignore[no-untyped-def]
        drawn.append(text)
        return original(texts, text)

    monkeypatch.setattr(docks, "static_text", recording)
    table.viewport().repaint()
    shown_long = [t for t in drawn if t.endswith("END")]
    assert shown_long and "…" in shown_long[0] and len(shown_long[0]) < len(long)
    table.selectRow(1)
    image = table.viewport().grab().toImage()
    rect = table.visualRect(table.pairs.index(1, 0))
    highlight = table.palette().color(QtGui.QPalette.ColorRole.Highlight).rgb()
    assert image.pixel(rect.right() - 2, rect.center().y()) == highlight
    table.clearSelection()
    one = table.pairs.index(2, 1)  # the value of the long token's row, alone
    table.selectionModel().select(one, QtCore.QItemSelectionModel.SelectionFlag.Select)
    image = table.viewport().grab().toImage()
    cell, token = table.visualRect(one), table.visualRect(table.pairs.index(2, 0))
    assert image.pixel(cell.right() - 2, cell.center().y()) == highlight
    assert image.pixel(token.right() - 2, token.center().y()) != highlight


def test_related_neurons_first_column_fits_its_texts(
    sample_window: MainWindow, loop: asyncio.AbstractEventLoop  # noqa: F811
) -> None:
    window = sample_window  # the bundled sample: real related neurons, some marked "∅"
    window.browser.go_to(NeuronRef("smollm2-135m", 3, 24))
    run_until(loop, lambda: window.browser.data is not None)
    tree = window.related_dock.tree
    texts = [tree.headerItem().text(0)]
    for i in range(tree.topLevelItemCount()):
        group = tree.topLevelItem(i)
        texts += [group.text(0)] + [group.child(j).text(0) for j in range(group.childCount())]
    assert len(texts) > 10 and any(t.endswith("∅") for t in texts)
    widest = max(tree.fontMetrics().horizontalAdvance(t) for t in texts)
    assert tree.columnWidth(0) >= widest + tree.indentation()


def test_the_neuron_shown_is_kept_after_the_picks_not_at_each(
    browser: Any, loop: asyncio.AbstractEventLoop, settings: QtCore.QSettings  # noqa: F811
) -> None:
    writes: list[str] = []
    original = settings.setValue

    def counted(key: str, value: object) -> None:
        writes.append(key)
        original(key, value)

    settings.setValue = counted  # type: ignore[method-assign]
    for index in (1, 2, 3):
        assert browser.go(0, index)
    assert BrowserState.LAST_NEURON_KEY not in writes  # nothing written at the picks
    wait_loaded(loop, browser, ref(0, 3))
    run_until(loop, lambda: BrowserState.LAST_NEURON_KEY in writes, timeout=5)
    assert writes.count(BrowserState.LAST_NEURON_KEY) == 1
    assert NeuronRef.from_json(settings.value(BrowserState.LAST_NEURON_KEY)) == ref(0, 3)


def test_closing_the_window_keeps_the_neuron_shown(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, settings: QtCore.QSettings
) -> None:
    window = make_window()
    target = NeuronRef("mirror", 1, 2)
    window.browser.go_to(target)
    window.close()  # before the 500 ms are up
    assert NeuronRef.from_json(settings.value(BrowserState.LAST_NEURON_KEY)) == target


def test_the_colour_scale_is_the_largest_activation_without_nans() -> None:
    """The records' colours are normalized by the largest activation of every section, NaN
    left out wherever it stands (first in a record, where `max` alone would keep it), and
    empty records counted as nothing (all negative: the scale is negative, as before)."""
    from neuron_desk.core.model import ActivationRecord, NeuronId, NeuronRecord
    from neuron_desk.qt.datasetpane import DatasetModel

    nan = float("nan")

    def record(*lists: list[float]) -> NeuronRecord:
        rows = [ActivationRecord([f"t{i}" for i in range(len(a))], a) for a in lists]
        return NeuronRecord(neuron_id=NeuronId(0, 0), most_positive_activation_records=rows)

    model = DatasetModel()
    for lists, scale in (
        (([nan, 1.0, 2.5], [0.5, nan, 1.5]), 2.5),
        (([1.0, nan, 3.0], [nan]), 3.0),
        (([-2.0, -0.5], []), -0.5),
        (([nan, nan],), 0.0),
    ):
        model.set_record(record(*lists))
        assert model.scale == scale, lists
