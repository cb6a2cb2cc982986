"""The neuron toolbar: dataset, layer and neuron pickers, back/forward/random, the interesting
neurons of the dataset, and the search box. It only lays out and announces what was picked."""

from __future__ import annotations

import bisect
from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset
from neuron_desk.qt.interesting import InterestingMenu

WithData = Callable[[int], "list[NeuronRef] | None"]
"""The neurons of a layer with data, or None when every neuron can be had."""


class NeuronSpinBox(QtWidgets.QSpinBox):
    """A neuron number whose arrows (and PgUp/PgDn) step among the neurons with data, when
    only some have data; typing any number still works."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.with_data: list[int] | None = None

    def stepBy(self, steps: int) -> None:
        indices = self.with_data
        if not indices:
            super().stepBy(steps)
            return
        value = self.value()
        if steps > 0:
            place = bisect.bisect_right(indices, value) + steps - 1
        else:
            place = bisect.bisect_left(indices, value) + steps
        self.setValue(indices[max(0, min(place, len(indices) - 1))])
        self.editingFinished.emit()


class NeuronPicker(QtWidgets.QToolBar):
    """Picks a dataset and a neuron; `back_action`, `forward_action` and `random_action` are
    shared with the Go menu."""

    dataset_picked = QtCore.Signal(str)
    """A dataset was chosen in the list (by name)."""
    go_requested = QtCore.Signal(int, int)
    """Go to (layer, neuron) of the chosen dataset."""
    neuron_picked = QtCore.Signal(object)
    """Go to a `NeuronRef` (an interesting neuron)."""
    search_requested = QtCore.Signal(str)

    def __init__(
        self,
        datasets: list[Dataset],
        parent: QtWidgets.QWidget | None = None,
        with_data: WithData | None = None,
    ) -> None:
        super().__init__("Neuron", parent)
        self._with_data = with_data
        self._dataset: Dataset | None = None
        self.setObjectName("NeuronToolbar")
        self.dataset_box = QtWidgets.QComboBox(self)
        self.dataset_box.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.dataset_box.setMinimumContentsLength(16)  # long titles elide; the list shows them
        self.dataset_box.setAccessibleName("Dataset")
        for dataset in datasets:
            self.dataset_box.addItem(dataset.title, dataset.name)
        self.dataset_box.currentIndexChanged.connect(
            lambda _: self.dataset_picked.emit(str(self.dataset_box.currentData()))
        )
        self.layer_box = QtWidgets.QSpinBox(self)
        self.layer_box.setPrefix("layer ")
        self.layer_box.setAccessibleName("Layer")
        self.layer_box.valueChanged.connect(self._layer_changed)
        self.neuron_box = NeuronSpinBox(self)
        self.neuron_box.setPrefix("neuron ")
        self.neuron_box.setAccessibleName("Neuron")
        self.go_button = QtWidgets.QPushButton("Go", self)
        self.go_button.setAccessibleName("Go to neuron")
        self.go_button.setMaximumWidth(self.go_button.fontMetrics().horizontalAdvance("Go") + 24)
        self.go_button.clicked.connect(self._go)
        self.neuron_box.editingFinished.connect(self._go)
        self.interesting_button = QtWidgets.QToolButton(self)
        self.interesting_button.setText("Interesting ▾")
        self.interesting_button.setAccessibleName("Interesting neurons")
        self.interesting_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.interesting_menu = InterestingMenu(self.interesting_button)
        self.interesting_menu.picked.connect(self.neuron_picked.emit)
        self.interesting_button.setMenu(self.interesting_menu)
        self.data_count = QtWidgets.QLabel(self)
        self.data_count.setAccessibleName("Neurons with data in this layer")
        self.search_box = QtWidgets.QLineEdit(self)
        self.search_box.setPlaceholderText("Search explanations…")
        self.search_box.setAccessibleName("Search explanations")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(
            lambda: self.search_requested.emit(self.search_box.text().strip())
        )
        for widget in (
            self.dataset_box, self.layer_box, self.neuron_box, self.data_count, self.go_button
        ):
            self.addWidget(widget)
        self.back_action = self.addAction("&Back")
        self.back_action.setIconText("◀")  # the toolbar shows the arrow, the Go menu the word
        self.back_action.setToolTip("Back (the previous neuron you looked at)")
        self.forward_action = self.addAction("&Forward")
        self.forward_action.setIconText("▶")
        self.forward_action.setToolTip("Forward")
        self.random_action = self.addAction("Random")
        self.addWidget(self.interesting_button)
        self.addSeparator()
        self.addWidget(self.search_box)
        self.back_action.setShortcut(QtGui.QKeySequence.StandardKey.Back)
        self.forward_action.setShortcut(QtGui.QKeySequence.StandardKey.Forward)
        self.random_action.setShortcut("Ctrl+R")

    def show_dataset(self, dataset: Dataset) -> None:
        """Select `dataset` (without announcing it), its ranges and interesting neurons."""
        self._dataset = dataset
        index = self.dataset_box.findData(dataset.name)
        if index != self.dataset_box.currentIndex():
            self.dataset_box.blockSignals(True)
            self.dataset_box.setCurrentIndex(index)
            self.dataset_box.blockSignals(False)
        self.layer_box.setRange(0, dataset.n_layers - 1)
        self.neuron_box.setRange(0, dataset.n_neurons - 1)
        self._name_units(dataset)
        self.interesting_menu.show_dataset(dataset)
        self._layer_changed(self.layer_box.value())

    def _name_units(self, dataset: Dataset) -> None:
        """Neurons or latents, layers or hook points: name them as the dataset's are."""
        unit = dataset.unit
        self.layer_box.setPrefix("layer " if dataset.dictionary is None else "hook point ")
        self.layer_box.setAccessibleName("Layer" if dataset.dictionary is None else "Hook point")
        self.neuron_box.setPrefix(f"{unit} ")
        self.neuron_box.setAccessibleName(unit.capitalize())
        self.go_button.setAccessibleName(f"Go to {unit}")
        self.interesting_button.setAccessibleName(f"Interesting {dataset.units}")
        self.data_count.setAccessibleName(f"{dataset.units.capitalize()} with data in this layer")
        self.back_action.setToolTip(f"Back (the previous {unit} you looked at)")

    def _layer_changed(self, layer: int) -> None:
        """Say how many neurons of the layer have data (when only some have)."""
        refs = self._with_data(layer) if self._with_data is not None else None
        self.neuron_box.with_data = None if refs is None else [r.index for r in refs]
        if refs is None:
            self.data_count.setText("")
            self.data_count.setToolTip("")
        else:
            dataset = self._dataset
            total = dataset.n_neurons if dataset is not None else 0
            units = dataset.units if dataset is not None else "neurons"
            self.data_count.setText(f" {len(refs)} of {total} {units} with data ")
            where = dataset.layer_label(layer) if dataset is not None else f"layer {layer}"
            self.data_count.setToolTip(
                f"Only these {units} of {where} have data here; the arrows, Next and "
                "Previous move among them"
            )
            self.layer_box.setToolTip(where)

    def show_neuron(self, ref: NeuronRef) -> None:
        """Show the current neuron's layer and index."""
        self.layer_box.setValue(ref.layer)
        self.neuron_box.setValue(ref.index)

    def focus(self) -> None:
        """Put the keyboard focus on the neuron number."""
        self.neuron_box.setFocus()
        self.neuron_box.selectAll()

    def _go(self) -> None:
        self.go_requested.emit(self.layer_box.value(), self.neuron_box.value())
