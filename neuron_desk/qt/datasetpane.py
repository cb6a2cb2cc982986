"""The dataset pane: a neuron's records by section (Top, quantile bands, Random) as heatmaps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.model import ActivationRecord, NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.service import Fetched, NeuronData
from neuron_desk.qt.heatmap import HeatmapRow, HeatmapView, RowRole, RowsModel

Qt = QtCore.Qt


@dataclass
class Section:
    """A titled list of records, of which `shown` are visible."""

    title: str
    records: list[ActivationRecord]
    shown: int

    @property
    def header(self) -> str:
        """The section title with counts and the show more/less hint."""
        n = len(self.records)
        if n <= self.shown and self.shown <= self.default_shown():
            return f"{self.title}  ({n})"
        if self.shown < n:
            return f"{self.title}  (showing {self.shown} of {n}; click to show all)"
        return f"{self.title}  ({n}; click to show fewer)"

    def default_shown(self) -> int:
        return _DEFAULT_SHOWN.get(self.title, 1)


YOUR_TEXTS = "Your texts"
"""The section of the user's own records (kept apart from the dataset's)."""
_DEFAULT_SHOWN = {"Top activations": 4, "Random sample": 2, YOUR_TEXTS: 5}

ORIGINS = {
    "store": "from the local store",
    "bundled": "from the bundled sample",
    "network": "fetched from the network",
    "folder": "from a local folder",
}


def where_from(data: NeuronData) -> str:
    """Where a neuron's activation records came from, e.g. "from the local store"."""
    record = data.record
    return ORIGINS.get(record.origin, "") if isinstance(record, Fetched) else ""


def sections_of(record: NeuronRecord) -> list[Section]:
    """The viewer's sections, in its order: Top; quantiles high to low; Random."""
    quantiles = record.random_sample_by_quantile or []
    bands = [
        ("Quantile range [0.99, 0.999] sample", 3),
        ("Quantile range [0.9, 0.99] sample", 2),
        ("Quantile range [0.5, 0.9] sample", 1),
        ("Quantile range [0, 0.5] sample", 0),
    ]
    sections = [Section("Top activations", list(record.most_positive_activation_records), 4)]
    for title, i in bands:
        if i < len(quantiles):
            sections.append(Section(title, list(quantiles[i]), 1))
    sections.append(Section("Random sample", list(record.random_sample), 2))
    return sections


class DatasetModel(RowsModel):
    """Header rows and record rows of all sections, in one list (so one view scrolls them)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._sections: list[Section] = []
        self._rows: list[tuple[int, int | None]] = []  # (section, record index or None)
        self._scale = 0.0
        self._heatmaps: dict[tuple[int, int], HeatmapRow] = {}
        """Each record's row, made once (its layouts are cached on it)."""

    def set_record(
        self, record: NeuronRecord | None, yours: Sequence[ActivationRecord] = ()
    ) -> None:
        """Show a neuron's records (None clears), colours normalized over the dataset's
        sections; the user's own records (`yours`) follow in their own section."""
        self.beginResetModel()
        self._sections = sections_of(record) if record is not None else []
        self._heatmaps = {}
        peaks = (_peak(r.activations) for s in self._sections for r in s.records)
        self._scale = max((p for p in peaks if p is not None), default=0.0)
        if record is not None and yours:
            self._sections.append(Section(YOUR_TEXTS, list(yours), 5))
        self._rebuild()
        self.endResetModel()

    def _rebuild(self) -> None:
        self._rows = []
        for i, section in enumerate(self._sections):
            self._rows.append((i, None))
            self._rows += [(i, j) for j in range(min(section.shown, len(section.records)))]

    def toggle(self, row: int) -> None:
        """Show all of a section's records, or back to the default few (header rows only)."""
        section_index, record = self._rows[row]
        if record is not None:
            return
        section = self._sections[section_index]
        before = min(section.shown, len(section.records))
        full = section.shown >= len(section.records)
        section.shown = section.default_shown() if full else len(section.records)
        after = min(section.shown, len(section.records))
        # Only the section's rows come and go: the other rows keep their laid-out heights.
        if after > before:
            self.beginInsertRows(QtCore.QModelIndex(), row + 1 + before, row + after)
            self._rebuild()
            self.endInsertRows()
        elif after < before:
            self.beginRemoveRows(QtCore.QModelIndex(), row + 1 + after, row + before)
            self._rebuild()
            self.endRemoveRows()
        else:
            self._rebuild()
        header = self.index(row, 0)
        self.dataChanged.emit(header, header)

    @property
    def scale(self) -> float:
        """The activation drawn at full colour."""
        return self._scale

    def row_data(self, row: int, role: int) -> object:
        section_index, record_index = self._rows[row]
        section = self._sections[section_index]
        if record_index is None:
            if role == Qt.ItemDataRole.DisplayRole:
                return section.header
            if role == Qt.ItemDataRole.AccessibleTextRole:
                return section.header
            return None
        record = section.records[record_index]
        if role == RowRole:
            key = (section_index, record_index)
            heatmap = self._heatmaps.get(key)
            if heatmap is None:
                heatmap = HeatmapRow(record.tokens, record.activations, self._scale)
                self._heatmaps[key] = heatmap
            return heatmap
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return f"{section.title} record {record_index + 1}: " + "".join(record.tokens)
        return None


class DatasetPane(QtWidgets.QWidget):
    """Records of the current neuron, painted by a delegate (only visible rows are painted)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = DatasetModel(self)
        self.view = HeatmapView(self)
        self.view.setModel(self.model)
        self.view.setAccessibleName("Dataset examples")
        self.view.clicked.connect(lambda index: self.model.toggle(index.row()))
        self.status = QtWidgets.QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        title = QtWidgets.QLabel("<b>Activations</b>", self)
        self.nearby = QtWidgets.QWidget(self)
        self.nearby.setAccessibleName("Nearest with data")
        self._nearby_layout = QtWidgets.QHBoxLayout(self.nearby)
        self._nearby_layout.setContentsMargins(0, 0, 0, 0)
        self.nearby_buttons: list[QtWidgets.QPushButton] = []
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(title)
        layout.addWidget(self.status)
        layout.addWidget(self.nearby)
        layout.addWidget(self.view, 1)
        self.show_message("")

    def show_record(self, record: NeuronRecord, yours: Sequence[ActivationRecord] = ()) -> None:
        """Show the records of a neuron (and the user's own, in their section)."""
        self.model.set_record(record, yours)
        if self.nearby_buttons:  # offered for the empty neuron shown before
            self.offer_nearby([], lambda _ref: None)
        self.status.setText(
            f"max activation {record.max_activation:.3f}; hover a token for its value, "
            "select excerpts and Ctrl+C to copy them as text"
        )
        self.view.scrollToTop()

    def show_neuron(self, data: NeuronData, yours: Sequence[ActivationRecord] = ()) -> None:
        """Show a loaded neuron's records (and the user's own), or why it has none."""
        record = data.record
        if isinstance(record, Fetched):
            self.show_record(record.value, yours)
        else:
            self.show_message(str(record) if record else "no activation records")

    def show_message(self, message: str) -> None:
        """Clear the records and say why (loading, not found, offline...)."""
        self.model.set_record(None)
        self.status.setText(message)
        self.offer_nearby([], lambda _ref: None)

    def offer_nearby(
        self, refs: list[NeuronRef], navigate: Callable[[NeuronRef], object]
    ) -> None:
        """Buttons to the nearest neurons with data (for an empty neuron); none hides them."""
        for widget in self.nearby.findChildren(QtWidgets.QWidget):
            widget.deleteLater()
        while self._nearby_layout.takeAt(0) is not None:
            pass
        self.nearby_buttons = []
        if refs:
            self._nearby_layout.addWidget(QtWidgets.QLabel("Nearest with data:", self.nearby))
        for ref in refs:
            button = QtWidgets.QPushButton(f"{ref.layer}:{ref.index}", self.nearby)
            button.setAccessibleName(f"Go to {ref.layer}:{ref.index}")
            button.clicked.connect(lambda _=False, r=ref: navigate(r))
            self._nearby_layout.addWidget(button)
            self.nearby_buttons.append(button)
        self._nearby_layout.addStretch(1)
        self.nearby.setVisible(bool(refs))

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self.view.relayout()  # row heights depend on the width


def _peak(activations: Sequence[float]) -> float | None:
    """The largest activation, NaN left out (None if there is none): `max` in C, and
    Python's loop only when a NaN came first (the one case where `max` keeps a NaN)."""
    if not activations:
        return None
    peak = max(activations)
    if peak != peak:
        return max((a for a in activations if a == a), default=None)
    return peak
