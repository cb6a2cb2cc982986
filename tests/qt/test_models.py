"""The item models and their sort proxy: best score first with a missing score last (0.0 above
-0.5, NaN as missing), header sorting well-defined both ways, and the views over them."""

from __future__ import annotations

import math
from typing import Any

from PySide6 import QtCore

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import ExplanationRow, NeuronExplanation
from neuron_desk.qt.explanationpane import ExplanationPane
from neuron_desk.qt.models import (
    ExplainedNeuronsModel,
    ExplanationsModel,
    ItemRole,
    ScoreSortProxy,
)

Qt = QtCore.Qt
ASC, DESC = Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder
_ROOT = QtCore.QModelIndex()


def texts(proxy: ScoreSortProxy, column: int) -> list[str]:
    return [str(proxy.index(r, column).data()) for r in range(proxy.rowCount())]


def explanation(text: str, score: float | None, created_at: float = 0.0) -> NeuronExplanation:
    return NeuronExplanation(text, score, "generated", created_at=created_at)


def row(layer: int, index: int, score: float | None, text: str = "") -> ExplanationRow:
    return ExplanationRow(0, NeuronRef("d", layer, index), text or f"{layer}:{index}", score,
                          "generated", {}, 0.0)


SCORES = [None, -0.5, 0.0, 0.9, math.nan, 0.3]


def test_explanations_best_first_with_missing_scores_last(qapp: Any) -> None:
    model = ExplanationsModel()
    proxy = ScoreSortProxy(model)
    proxy.sort_best_first()
    model.set_items([explanation(f"e{i}", s) for i, s in enumerate(SCORES)])
    assert texts(proxy, 1) == ["e3", "e5", "e2", "e1", "e0", "e4"]  # 0.0 above -0.5
    assert texts(proxy, 0) == ["0.90", "0.30", "0.00", "-0.50", "n/a", "n/a"]
    # The model itself holds them best first too (the order ties keep).
    assert [e.explanation for e in model.items()] == ["e3", "e5", "e2", "e1", "e0", "e4"]


def test_header_sorting_is_well_defined_both_ways(qapp: Any) -> None:
    model = ExplainedNeuronsModel()
    proxy = ScoreSortProxy(model)
    model.set_items([row(0, i, s) for i, s in enumerate(SCORES)])
    proxy.sort(model.SCORE_COLUMN, DESC)
    assert texts(proxy, 2) == ["0.90", "0.30", "0.00", "-0.50", "n/a", "n/a"]
    proxy.sort(model.SCORE_COLUMN, ASC)  # a missing score counts as the lowest
    assert texts(proxy, 2) == ["n/a", "n/a", "-0.50", "0.00", "0.30", "0.90"]
    assert texts(proxy, 1)[:2] == ["0", "4"]  # missing ones keep their order (None, then NaN)
    proxy.sort(model.SCORE_COLUMN, DESC)
    assert texts(proxy, 2)[-2:] == ["n/a", "n/a"]


def test_other_columns_sort_by_value_not_text(qapp: Any) -> None:
    model = ExplainedNeuronsModel()
    proxy = ScoreSortProxy(model)
    model.set_items([row(10, 1, 0.1), row(2, 30, 0.2), row(2, 4, None)])
    proxy.sort(0, ASC)
    assert texts(proxy, 0) == ["2", "2", "10"]
    proxy.sort(1, ASC)
    assert texts(proxy, 1) == ["1", "4", "30"]
    proxy.sort(3, DESC)
    assert texts(proxy, 3) == ["2:4", "2:30", "10:1"]
    target = proxy.item_at(0)
    assert isinstance(target, ExplanationRow) and target.ref == NeuronRef("d", 2, 4)
    assert proxy.index(0, 2).data(ItemRole) is target


def test_explanations_sort_by_time_and_tooltips_are_plain(qapp: Any) -> None:
    model = ExplanationsModel()
    proxy = ScoreSortProxy(model)
    model.set_items(
        [explanation("<b>late</b>", None, 200.0), explanation("early", 0.5, 100.0)]
    )
    proxy.sort(5, ASC)
    assert texts(proxy, 1) == ["early", "<b>late</b>"]
    tooltip = proxy.index(1, 1).data(Qt.ItemDataRole.ToolTipRole)
    assert "&lt;b&gt;" in tooltip and "<b>" not in tooltip.removeprefix("<qt>")
    assert proxy.index(1, 0).data(Qt.ItemDataRole.ToolTipRole) is None


def test_the_pane_selects_the_best_and_lists_in_display_order(qtbot: Any) -> None:
    pane = ExplanationPane()
    qtbot.addWidget(pane)
    pane.set_entries([explanation(f"e{i}", s) for i, s in enumerate(SCORES)], "a message")
    assert [e.explanation for e in pane.entries()] == ["e3", "e5", "e2", "e1", "e0", "e4"]
    selected = {i.row() for i in pane.table.selectionModel().selectedIndexes()}
    assert selected == {0}
    assert "e3 — not scored here (generated)" in pane.details.text()
    pane.table.selectRow(4)
    assert "e0" in pane.details.text()
    pane.set_entries([], "nothing yet")
    assert pane.entries() == [] and pane.details.text() == "nothing yet"


def test_painting_a_sorted_table_asks_python_once_per_index(qtbot: Any) -> None:
    """The table's header and cells, through the sorting proxy: the model's titles and cells as
    they are, and no `rowCount`/`columnCount` call into Python per index mapped (Qt's own
    `index` made two for each, at every cell and header section painted)."""
    from PySide6 import QtWidgets

    counted: list[str] = []

    class Counted(ExplanationsModel):
        def rowCount(self, parent: Any = _ROOT) -> int:
            counted.append("rowCount")
            return super().rowCount(parent)

        def columnCount(self, parent: Any = _ROOT) -> int:
            counted.append("columnCount")
            return super().columnCount(parent)

    model = Counted()
    proxy = ScoreSortProxy(model)
    proxy.sort_best_first()
    table = QtWidgets.QTableView()
    qtbot.addWidget(table)
    table.setModel(proxy)
    model.set_items([explanation(f"e{i}", s) for i, s in enumerate(SCORES)])
    table.resize(900, 300)
    table.show()
    QtWidgets.QApplication.processEvents()
    header = [proxy.headerData(c, Qt.Orientation.Horizontal) for c in range(proxy.columnCount())]
    assert header == list(ExplanationsModel.COLUMNS)
    assert texts(proxy, 0)[:2] == ["0.90", "0.30"]
    assert not model.index(len(SCORES), 0).isValid() and not model.index(0, 99).isValid()
    assert not model.index(0, 0, model.index(0, 0)).isValid()  # a flat table: no children
    counted.clear()
    table.horizontalHeader().viewport().repaint()
    table.viewport().repaint()
    assert len(counted) <= 4, counted  # it was 2 per index: over two hundred
