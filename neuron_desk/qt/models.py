"""Qt item models as adapters over domain lists (napari's `_base_item_model.py`), and the sort
proxy that orders them by score.

Rows are shown best score first with a missing score last (`best_first_key`: None after every
score, 0.0 above -0.5). Sorting a score column by its header is well-defined both ways: a
missing score counts as lower than any score, so it is last in the descending (best first)
order and first in the ascending one. Rows that tie keep the model's best-first order in both
directions (Qt's own order of ties is not stable across directions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from PySide6 import QtCore

from neuron_desk.core.scores import best_first, best_first_key, has_score
from neuron_desk.data.explanations import ExplanationRow, NeuronExplanation
from neuron_desk.data.registry import Dataset
from neuron_desk.qt.heatmap import plain_tooltip, visible_text

Qt = QtCore.Qt
T = TypeVar("T")

SortRole = Qt.ItemDataRole.UserRole + 10
"""What a cell sorts by: a number, a text, or (score columns) the score or None."""
ItemRole = Qt.ItemDataRole.UserRole + 11
"""The domain object a row shows."""

METHOD_LABELS = {
    "all_at_once_prompt_logprobs": "prompt-logprobs",
    "all_at_once_chat_generation": "chat",
    "one_at_a_time": "one-at-a-time",
    "all_at_once_chat_generation_written_digits": "written digits (no logprobs)",
    "logprob_free_json": "logprob-free (no logprobs)",
}
NOT_COMPARABLE = ("all_at_once_chat_generation_written_digits", "logprob_free_json")
"""Simulators that read written digits: their scores are not comparable with logprob ones."""


def opinions_text(opinions: Sequence[dict[str, Any]]) -> str:
    """Second opinions as "detection 0.82 · fuzzing 0.71" (balanced accuracy; an imported
    score without one, e.g. Neuronpedia's, shows its own value)."""
    return " · ".join(
        f"{o.get('scorer', '?')} {format_score(o.get('balanced_accuracy', o.get('value')))}"
        for o in opinions
    )


def format_score(score: float | None) -> str:
    """A score for display; "n/a" when undefined (None or NaN)."""
    return f"{score:.2f}" if score is not None and has_score(score) else "n/a"


def method_label(method: str) -> str:
    """A simulator's short name."""
    return METHOD_LABELS.get(method, method)


class ListTableModel(QtCore.QAbstractTableModel, Generic[T]):
    """A read-only table over a list of items; subclasses say what each cell shows.

    `SCORE_COLUMN` is the column sorted with `ScoreSortProxy`'s score order.
    """

    COLUMNS: tuple[str, ...] = ()
    SCORE_COLUMN = 0
    ROLES: frozenset[int] = frozenset(
        (Qt.ItemDataRole.DisplayRole.value, Qt.ItemDataRole.ToolTipRole.value, SortRole, ItemRole)
    )
    """The roles `cell` answers (Qt asks about ten per cell at every paint; the others
    return at once)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._items: list[T] = []

    def set_items(self, items: Sequence[T]) -> None:
        """Show `items` (in the given order, which ties keep when sorted)."""
        self.beginResetModel()
        self._items = list(items)
        self.endResetModel()

    def items(self) -> list[T]:
        """The items, in model order."""
        return list(self._items)

    def item(self, row: int) -> T:
        """The item of a model row."""
        return self._items[row]

    def rowCount(
        self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex = QtCore.QModelIndex()
    ) -> int:
        return 0 if parent.isValid() else len(self._items)

    def columnCount(
        self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex = QtCore.QModelIndex()
    ) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def index(
        self,
        row: int,
        column: int,
        parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex = QtCore.QModelIndex(),
    ) -> QtCore.QModelIndex:
        """One call instead of Qt's, which asks `rowCount` and `columnCount` (each a call into
        Python) for every index a sorting proxy maps, at every cell and header it paints."""
        inside = 0 <= row < len(self._items) and 0 <= column < len(self.COLUMNS)
        if parent.isValid() or not inside:
            return QtCore.QModelIndex()
        return self.createIndex(row, column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section] if 0 <= section < len(self.COLUMNS) else None
        return None

    def data(
        self,
        index: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> object:
        if role not in self.ROLES or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        if role == ItemRole:
            return item
        return self.cell(item, index.column(), role)

    def cell(self, item: T, column: int, role: int) -> object:
        """What `column` of `item` shows for `role` (None: nothing)."""
        raise NotImplementedError


class ScoreSortProxy(QtCore.QSortFilterProxyModel):
    """Sorts by `SortRole`; the source's score column in `best_first_key` order (a missing
    score lowest), so that the descending order is best first with a missing score last."""

    def __init__(self, source: ListTableModel[T], parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.setSourceModel(source)
        self.setSortRole(SortRole)
        self.setDynamicSortFilter(True)
        self.score_column = source.SCORE_COLUMN

    def sort_best_first(self) -> None:
        """The default order: best score first, a missing score last."""
        self.sort(self.score_column, Qt.SortOrder.DescendingOrder)

    def lessThan(
        self,
        left: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
        right: QtCore.QModelIndex | QtCore.QPersistentModelIndex,
    ) -> bool:
        a: Any = left.data(SortRole)
        b: Any = right.data(SortRole)
        if left.column() == self.score_column:  # `a` is less if it ranks after `b`
            a, b = best_first_key(right.data(SortRole)), best_first_key(left.data(SortRole))
        elif a is None or b is None:  # a missing value is the lowest
            a, b = (a is not None, 0), (b is not None, 0)
        if a == b:  # ties keep the model's (best-first) order, whichever the direction
            if self.sortOrder() == Qt.SortOrder.AscendingOrder:
                return left.row() < right.row()
            return left.row() > right.row()
        return bool(a < b)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        """The source's column titles as they are (columns are never filtered or moved here),
        without mapping an index per title and role."""
        if orientation == Qt.Orientation.Horizontal:
            return self.sourceModel().headerData(section, orientation, role)
        return super().headerData(section, orientation, role)

    def item_at(self, row: int) -> object:
        """The domain object shown in a proxy row."""
        return self.index(row, 0).data(ItemRole)


class ExplanationsModel(ListTableModel[NeuronExplanation]):
    """A neuron's explanations: score, text, source, simulator, model, when."""

    COLUMNS = ("score", "explanation", "2nd opinions", "source", "simulator", "model", "when")
    SCORE_COLUMN = 0

    def set_items(self, items: Sequence[NeuronExplanation]) -> None:
        """Show explanations, best score first."""
        super().set_items(best_first(items, lambda e: e.score))

    def cell(self, item: NeuronExplanation, column: int, role: int) -> object:
        if role == SortRole:
            if column == 0:
                return item.score
            if column == 6:
                return item.created_at or 0.0
            return self.cell(item, column, Qt.ItemDataRole.DisplayRole)
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        if column == 0:
            text = format_score(item.score)
        elif column == 1:
            text = visible_text(item.explanation.strip())  # bidi/zero-width shown, not obeyed
        elif column == 2:
            text = opinions_text(item.opinions)
        elif column == 3:
            text = item.source if item.scorer == "simulation" else f"{item.source} ({item.scorer})"
        elif column == 4:
            text = method_label(item.method)
        elif column == 5:
            text = item.model
        else:
            text = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(item.created_at))
                if item.created_at
                else ""
            )
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 4 and item.method in NOT_COMPARABLE:
                return "written digits, no logprobs: not comparable with logprob scores"
            return plain_tooltip(text) if column in (1, 2) else None
        return text


class ExplainedNeuronsModel(ListTableModel[ExplanationRow]):
    """The best own explanation of every explained neuron: layer, neuron, score, text."""

    COLUMNS: tuple[str, ...] = ("layer", "neuron", "score", "explanation")
    SCORE_COLUMN = 2

    def name_units(self, dataset: Dataset) -> None:
        """Head the columns as the dataset names its units (latents at hook points)."""
        layer = "layer" if dataset.dictionary is None else "hook point"
        self.COLUMNS = (layer, dataset.unit, "score", "explanation")
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, 1)

    def set_items(self, items: Sequence[ExplanationRow]) -> None:
        """Show rows, best score first."""
        super().set_items(best_first(items, lambda row: row.score))

    def cell(self, item: ExplanationRow, column: int, role: int) -> object:
        values: tuple[object, ...] = (
            item.ref.layer,
            item.ref.index,
            item.score,
            visible_text(item.explanation.strip()),
        )
        if role == SortRole:
            return values[column]
        if role == Qt.ItemDataRole.DisplayRole:
            return format_score(item.score) if column == 2 else str(values[column])
        return None
