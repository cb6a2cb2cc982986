"""The Interesting menu: each neuron with its label and what it fires on (its description:
top tokens for the bundled sample, the viewer's words for GPT-2 XL), searchable as you type."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset
from neuron_desk.qt.heatmap import plain_tooltip, visible_text

Qt = QtCore.Qt
RefRole = Qt.ItemDataRole.UserRole + 1


def entry_text(layer: int, neuron: int, label: str, description: str) -> str:
    """One line of the list: "3:24  ' on', ' way', 'string' — high kurtosis #1"."""
    fires_on = description.removeprefix("peaks on ").strip()
    text = f"{layer}:{neuron}  {fires_on}" if fires_on else f"{layer}:{neuron}"
    if label and label not in fires_on:
        text += f" — {label}"
    return visible_text(text)


class InterestingMenu(QtWidgets.QMenu):
    """A menu holding a search box over the list of interesting neurons."""

    picked = QtCore.Signal(object)
    """A neuron (`NeuronRef`) was chosen."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        box = QtWidgets.QWidget(self)
        self.search = QtWidgets.QLineEdit(box)
        self.search.setPlaceholderText("Filter: a token, a label, 3:24…")
        self.search.setAccessibleName("Filter interesting neurons")
        self.search.setClearButtonEnabled(True)
        self.list = QtWidgets.QListWidget(box)
        self.list.setAccessibleName("Interesting neurons")
        self.list.setMinimumSize(520, 360)
        self.list.setUniformItemSizes(True)
        layout = QtWidgets.QVBoxLayout(box)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.list)
        action = QtWidgets.QWidgetAction(self)
        action.setDefaultWidget(box)
        self.addAction(action)
        self.search.textChanged.connect(self.filter)
        self.search.returnPressed.connect(self._first)
        self.list.itemActivated.connect(self._chosen)
        self.list.itemClicked.connect(self._chosen)
        self.aboutToShow.connect(self.search.setFocus)

    def show_dataset(self, dataset: Dataset) -> None:
        """List the dataset's interesting neurons, under their group headings."""
        self.list.clear()
        self.search.clear()
        group = None
        for item in dataset.interesting:
            if item.group and item.group != group:
                group = item.group
                heading = QtWidgets.QListWidgetItem(group)
                heading.setFlags(Qt.ItemFlag.NoItemFlags)
                font = heading.font()
                font.setBold(True)
                heading.setFont(font)
                self.list.addItem(heading)
            row = QtWidgets.QListWidgetItem(
                entry_text(item.layer, item.neuron, item.label, item.description)
            )
            row.setData(RefRole, NeuronRef(dataset.name, item.layer, item.neuron))
            row.setToolTip(plain_tooltip(f"{item.label}: {item.description}"))
            self.list.addItem(row)
        if not dataset.interesting:
            self.list.addItem("(no list for this dataset)")

    def filter(self, text: str) -> int:
        """Show only neurons whose line mentions `text` (case-insensitive); how many."""
        needle = text.strip().lower()
        shown = 0
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(RefRole) is None:
                item.setHidden(bool(needle))  # headings only when not filtering
                continue
            hide = bool(needle) and needle not in (item.text() + item.toolTip()).lower()
            item.setHidden(hide)
            shown += not hide
        return shown

    def visible_refs(self) -> list[NeuronRef]:
        """The neurons listed now (after filtering), in order."""
        return [
            self.list.item(i).data(RefRole)
            for i in range(self.list.count())
            if not self.list.item(i).isHidden() and self.list.item(i).data(RefRole) is not None
        ]

    def _first(self) -> None:
        refs = self.visible_refs()
        if refs:
            self._pick(refs[0])

    def _chosen(self, item: QtWidgets.QListWidgetItem) -> None:
        ref = item.data(RefRole)
        if isinstance(ref, NeuronRef):
            self._pick(ref)

    def _pick(self, ref: NeuronRef) -> None:
        self.close()
        self.picked.emit(ref)
