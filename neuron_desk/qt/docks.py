"""Docks: top tokens (by activation and by weight) and related neurons (upstream, downstream)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.model import NeuronConnections, NeuronId
from neuron_desk.data.service import Fetched, NeuronData
from neuron_desk.qt.heatmap import Palette, plain_tooltip, visible_token

Qt = QtCore.Qt


def _why_empty(value: object, what: str, dataset_title: str) -> str:
    if isinstance(value, NeuronDeskError):
        return str(value)
    if value is None:
        return f"{dataset_title} has no {what}"
    return f"no {what}"


class TokenList(QtWidgets.QTableWidget):
    """Tokens with a strength each, the strength shown as a coloured cell."""

    def __init__(self, title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels([title, "value"])
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAccessibleName(title)

    def set_pairs(self, pairs: list[tuple[str, float]], empty: str) -> None:
        """Fill with (token, value) pairs, or one row saying why there are none."""
        self.setRowCount(0)
        if not pairs:
            self.setRowCount(1)
            item = QtWidgets.QTableWidgetItem(empty)
            item.setForeground(self.palette().color(QtGui.QPalette.ColorRole.PlaceholderText))
            self.setItem(0, 0, item)
            return
        scale = max(abs(v) for _, v in pairs) or 1.0
        palette = Palette(self.palette())
        self.setRowCount(len(pairs))
        for row, (token, value) in enumerate(pairs):
            token_item = QtWidgets.QTableWidgetItem(visible_token(token))  # plain text, never HTML
            token_item.setToolTip(plain_tooltip(repr(token)))
            colour = palette.heat(abs(value), scale)
            token_item.setBackground(colour)
            token_item.setForeground(palette.text_on(colour))
            self.setItem(row, 0, token_item)
            self.setItem(row, 1, QtWidgets.QTableWidgetItem(f"{value:.3g}"))


class TopTokensDock(QtWidgets.QDockWidget):
    """Tokens with the highest mean activation, and the strongest input/output weights."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Top tokens", parent)
        self.setObjectName("TopTokensDock")
        tabs = QtWidgets.QTabWidget(self)
        self.by_activation = TokenList("mean activation")
        self.lists = {
            name: TokenList(name.replace("_", " "))
            for name in ("input_positive", "input_negative", "output_positive", "output_negative")
        }
        tabs.addTab(self.by_activation, "By activation")
        weights = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(weights)
        for i, widget in enumerate(self.lists.values()):
            grid.addWidget(widget, i // 2, i % 2)
        tabs.addTab(weights, "By weight")
        self.setWidget(tabs)

    def show_neuron(self, data: NeuronData) -> None:
        """Fill from a neuron's token files, or say why a list is empty."""
        title = data.dataset.title
        by_activation = data.tokens_by_activation
        self.by_activation.set_pairs(
            by_activation.value.pairs()[:50] if isinstance(by_activation, Fetched) else [],
            _why_empty(by_activation, "activation-based top tokens", title),
        )
        weights = data.tokens_by_weight
        for name, widget in self.lists.items():
            pairs = (
                getattr(weights.value, name).pairs()[:50] if isinstance(weights, Fetched) else []
            )
            widget.set_pairs(pairs, _why_empty(weights, "weight-based tokens", title))

    def clear(self, message: str) -> None:
        """Empty every list with a message."""
        for widget in [self.by_activation, *self.lists.values()]:
            widget.set_pairs([], message)


class RelatedNeuronsDock(QtWidgets.QDockWidget):
    """Upstream and downstream neurons by weight; their explanations load lazily; click to go."""

    def __init__(
        self,
        navigate: Callable[[int, int], None],
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__("Related neurons", parent)
        self.setObjectName("RelatedNeuronsDock")
        self._navigate = navigate
        self.tree = QtWidgets.QTreeWidget(self)
        self.tree.setHeaderLabels(["neuron", "weight", "explanation", "score"])
        self.tree.setAccessibleName("Related neurons")
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemClicked.connect(self._activated)
        self.setWidget(self.tree)
        self._items: dict[tuple[int, int], list[QtWidgets.QTreeWidgetItem]] = {}

    def show_neuron(self, data: NeuronData) -> list[tuple[int, int]]:
        """Fill from a neuron's related-neurons file; returns the neurons listed."""
        self.tree.clear()
        self._items.clear()
        related = data.related
        if not isinstance(related, Fetched):
            self._message(_why_empty(related, "weight-based related neurons", data.dataset.title))
            return []
        for title, connections in (
            ("Upstream", related.value.c_fc),
            ("Downstream", related.value.c_proj),
        ):
            self._add_group(title, connections)
        self.tree.expandAll()
        self.tree.resizeColumnToContents(0)
        return list(self._items)

    def _add_group(self, title: str, connections: NeuronConnections | None) -> None:
        group = QtWidgets.QTreeWidgetItem([title])
        self.tree.addTopLevelItem(group)
        if connections is None:
            group.addChild(QtWidgets.QTreeWidgetItem(["none in this direction"]))
            return
        for sign, pairs in (("+", connections.positive()), ("−", connections.negative())):
            for neuron, weight in pairs[:10]:
                self._add_neuron(group, neuron, weight, sign)

    def _add_neuron(
        self, group: QtWidgets.QTreeWidgetItem, neuron: NeuronId, weight: float, sign: str
    ) -> None:
        key = (neuron.layer_index, neuron.neuron_index)
        item = QtWidgets.QTreeWidgetItem(
            [f"{key[0]}:{key[1]}", f"{sign}{abs(weight):.3f}", "…", ""]
        )
        item.setData(0, Qt.ItemDataRole.UserRole, key)
        group.addChild(item)
        self._items.setdefault(key, []).append(item)

    def set_explanation(self, layer: int, neuron: int, text: str, score: float | None) -> None:
        """Fill in a related neuron's explanation once it has loaded."""
        for item in self._items.get((layer, neuron), []):
            item.setText(2, text.strip())  # QTreeWidgetItem text is plain text
            item.setText(3, "" if score is None else f"{score:.2f}")

    def clear(self, message: str) -> None:
        """Empty the tree with a message."""
        self.tree.clear()
        self._items.clear()
        self._message(message)

    def _message(self, message: str) -> None:
        item = QtWidgets.QTreeWidgetItem([message])
        item.setToolTip(0, plain_tooltip(message))
        self.tree.addTopLevelItem(item)
        item.setFirstColumnSpanned(True)

    def _activated(self, item: QtWidgets.QTreeWidgetItem) -> None:
        key = item.data(0, Qt.ItemDataRole.UserRole)
        if key:
            self._navigate(int(key[0]), int(key[1]))


class _ScoreItem(QtWidgets.QTableWidgetItem):
    """A table cell that sorts by its number, not its text (n/a last)."""

    def __init__(self, value: float | None) -> None:
        super().__init__("n/a" if value is None else f"{value:.2f}")
        self.value = -9.0 if value is None else value

    def __lt__(self, other: QtWidgets.QTableWidgetItem) -> bool:
        if isinstance(other, _ScoreItem):
            return self.value < other.value
        return super().__lt__(other)


class BatchResultsDock(QtWidgets.QDockWidget):
    """Every neuron of the dataset with a generated explanation, sortable by best score."""

    def __init__(
        self,
        navigate: Callable[[int, int], None],
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__("Explained neurons", parent)
        self.setObjectName("BatchResultsDock")
        self._navigate = navigate
        self.table = QtWidgets.QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["layer", "neuron", "score", "explanation"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(
            3, QtWidgets.QHeaderView.ResizeMode.Stretch
        )
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAccessibleName("Explained neurons by score")
        self.table.cellActivated.connect(self._activated)
        self.table.cellDoubleClicked.connect(self._activated)
        self.setWidget(self.table)

    def show_results(self, rows: list[tuple[int, int, float | None, str]]) -> None:
        """(layer, neuron, best score, explanation) rows, best first until re-sorted."""
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for i, (layer, neuron, score, text) in enumerate(rows):
            for j, item in enumerate(
                (
                    _ScoreItem(layer),
                    _ScoreItem(neuron),
                    _ScoreItem(score),
                    QtWidgets.QTableWidgetItem(text.strip()),
                )
            ):
                if j < 2:
                    item.setText(str(layer if j == 0 else neuron))
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(2, Qt.SortOrder.DescendingOrder)
        self.setWindowTitle(f"Explained neurons ({len(rows)})")

    def _activated(self, row: int, _column: int) -> None:
        layer, neuron = self.table.item(row, 0), self.table.item(row, 1)
        if layer is not None and neuron is not None:
            self._navigate(int(layer.text()), int(neuron.text()))
