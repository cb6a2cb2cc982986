"""The main window: neuron picker, explanation and dataset panes, docks, history, settings."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core import codec
from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.model import NeuronRecord, NeuronSimulationResults, ScoredExplanation
from neuron_desk.data.exports import export_generated, export_neuron
from neuron_desk.data.registry import Dataset, Kind, Registry
from neuron_desk.data.service import Fetched, NeuronData, NeuronService
from neuron_desk.data.store import Store
from neuron_desk.qt.asyncbridge import TaskSlots
from neuron_desk.qt.datasetpane import DatasetPane
from neuron_desk.qt.docks import BatchResultsDock, RelatedNeuronsDock, TopTokensDock
from neuron_desk.qt.explanationpane import ExplanationEntry, ExplanationPane
from neuron_desk.qt.heatmap import plain_tooltip

Qt = QtCore.Qt
NeuronKey = tuple[str, int, int]


class Runner(Protocol):
    """Explains and scores through an LLM endpoint, storing every result at once."""

    def profile_names(self) -> list[str]: ...

    def default_profile(self) -> str: ...

    def describe_estimate(self, profile: str, samples: int, record: NeuronRecord) -> str: ...

    async def generate(
        self,
        profile: str,
        key: NeuronKey,
        record: NeuronRecord,
        samples: int,
        progress: Callable[[int, int], None],
        report: Callable[[str], None],
    ) -> list[ExplanationEntry]: ...

    async def score(
        self,
        profile: str,
        key: NeuronKey,
        record: NeuronRecord,
        explanation: str,
        progress: Callable[[int, int], None],
        report: Callable[[str], None],
    ) -> ExplanationEntry: ...

    async def reload(self, config: Any) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class History:
    """Back/forward navigation over visited neurons."""

    items: list[NeuronKey] = field(default_factory=list)
    position: int = -1

    def visit(self, key: NeuronKey) -> None:
        if self.position >= 0 and self.items[self.position] == key:
            return
        del self.items[self.position + 1 :]
        self.items.append(key)
        self.position = len(self.items) - 1

    def back(self) -> NeuronKey | None:
        if self.position > 0:
            self.position -= 1
            return self.items[self.position]
        return None

    def forward(self) -> NeuronKey | None:
        if self.position < len(self.items) - 1:
            self.position += 1
            return self.items[self.position]
        return None


class MainWindow(QtWidgets.QMainWindow):
    """The app's window; every long operation runs as a named task that can be cancelled."""

    neuron_shown = QtCore.Signal(str, int, int)
    """Emitted when all panes show a neuron (dataset, layer, neuron)."""
    run_finished = QtCore.Signal(str)
    """Emitted when a generate/score run ends: "done", "cancelled" or the error."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        service: NeuronService,
        runner: Runner | None,
        settings: QtCore.QSettings,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.store = store
        self.service = service
        self.runner = runner
        self.settings = settings
        self.tasks = TaskSlots(self._task_failed)
        self.history = History()
        self.current: NeuronKey | None = None
        self.current_data: NeuronData | None = None
        self.setWindowTitle("neuron-desk")
        self.setObjectName("MainWindow")
        self._build_picker()
        self._build_central()
        self._build_docks()
        self._build_menus()
        self.offline_label = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.offline_label)
        self._update_offline_label()
        self.dataset_box.currentIndexChanged.connect(self._refresh_results_if_shown)
        self.explanations.generate_requested.connect(self.generate)
        self.explanations.score_requested.connect(self.score_own)
        self.explanations.cancel_requested.connect(self.cancel_run)
        if runner is not None:
            self.explanations.set_profiles(runner.profile_names(), runner.default_profile())

    # --- building ---

    def _build_picker(self) -> None:
        bar = QtWidgets.QToolBar("Neuron", self)
        bar.setObjectName("NeuronToolbar")
        self.addToolBar(bar)
        self.dataset_box = QtWidgets.QComboBox(bar)
        self.dataset_box.setAccessibleName("Dataset")
        for dataset in self.registry.all():
            self.dataset_box.addItem(dataset.title, dataset.name)
        self.dataset_box.currentIndexChanged.connect(self._dataset_changed)
        self.layer_box = QtWidgets.QSpinBox(bar)
        self.layer_box.setPrefix("layer ")
        self.layer_box.setAccessibleName("Layer")
        self.neuron_box = QtWidgets.QSpinBox(bar)
        self.neuron_box.setPrefix("neuron ")
        self.neuron_box.setAccessibleName("Neuron")
        self.go_button = QtWidgets.QPushButton("Go", bar)
        self.go_button.setAccessibleName("Go to neuron")
        self.go_button.clicked.connect(self._go_clicked)
        self.neuron_box.editingFinished.connect(self._go_clicked)
        self.interesting_button = QtWidgets.QToolButton(bar)
        self.interesting_button.setText("Interesting ▾")
        self.interesting_button.setAccessibleName("Interesting neurons")
        self.interesting_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.search_box = QtWidgets.QLineEdit(bar)
        self.search_box.setPlaceholderText("Search explanations…")
        self.search_box.setAccessibleName("Search explanations")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(self._search)
        for widget in (self.dataset_box, self.layer_box, self.neuron_box, self.go_button):
            bar.addWidget(widget)
        self.back_action = bar.addAction("◀ Back", self.back)
        self.forward_action = bar.addAction("Forward ▶", self.forward)
        self.random_action = bar.addAction("Random", self.random_neuron)
        bar.addWidget(self.interesting_button)
        bar.addSeparator()
        bar.addWidget(self.search_box)
        self.back_action.setShortcut(QtGui.QKeySequence.StandardKey.Back)
        self.forward_action.setShortcut(QtGui.QKeySequence.StandardKey.Forward)
        self.random_action.setShortcut("Ctrl+R")
        self._dataset_changed()

    def _build_central(self) -> None:
        self.title = QtWidgets.QLabel(self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setAccessibleName("Current neuron")
        self.subtitle = QtWidgets.QLabel(self)
        self.subtitle.setTextFormat(Qt.TextFormat.PlainText)
        self.explanations = ExplanationPane(self)
        self.dataset_pane = DatasetPane(self)
        splitter = QtWidgets.QSplitter(Qt.Orientation.Vertical, self)
        splitter.setObjectName("CentralSplitter")
        splitter.addWidget(self.explanations)
        splitter.addWidget(self.dataset_pane)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        self.splitter = splitter
        central = QtWidgets.QWidget(self)
        layout = QtWidgets.QVBoxLayout(central)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

    def _build_docks(self) -> None:
        self.tokens_dock = TopTokensDock(self)
        self.related_dock = RelatedNeuronsDock(
            lambda layer, neuron: self.go_to_layer_neuron(layer, neuron), self
        )
        self.search_dock = QtWidgets.QDockWidget("Search results", self)
        self.search_dock.setObjectName("SearchDock")
        self.search_results = QtWidgets.QListWidget(self.search_dock)
        self.search_results.setAccessibleName("Search results")
        self.search_results.itemActivated.connect(self._search_result_chosen)
        self.search_results.itemClicked.connect(self._search_result_chosen)
        self.search_dock.setWidget(self.search_results)
        self.results_dock = BatchResultsDock(self.go_to_layer_neuron, self)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.tokens_dock)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.related_dock)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.search_dock)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.results_dock)
        self.search_dock.hide()
        self.results_dock.hide()
        self.results_dock.visibilityChanged.connect(self._refresh_results_if_shown)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("&Export this neuron…", self.export_current, "Ctrl+E")
        file_menu.addAction("Export all &generated results…", self.export_all_generated)
        file_menu.addSeparator()
        file_menu.addAction(
            "&Settings…", self.open_settings, QtGui.QKeySequence.StandardKey.Preferences
        )
        file_menu.addSeparator()
        file_menu.addAction("&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)
        go_menu = self.menuBar().addMenu("&Go")
        go_menu.addAction(self.back_action)
        go_menu.addAction(self.forward_action)
        go_menu.addAction("&Next neuron", lambda: self._step(1), "Ctrl+]")
        go_menu.addAction("&Previous neuron", lambda: self._step(-1), "Ctrl+[")
        go_menu.addAction(self.random_action)
        go_menu.addAction("&Pick a neuron", self._focus_picker, "Ctrl+L")
        go_menu.addAction("&Search explanations", self.search_box.setFocus, "Ctrl+F")
        run_menu = self.menuBar().addMenu("&Run")
        run_menu.addAction(
            "&Generate && score", lambda: self.generate(self.explanations.samples.value()), "Ctrl+G"
        )
        run_menu.addAction("&Cancel", self.cancel_run, "Esc")
        view_menu = self.menuBar().addMenu("&View")
        for dock in (self.tokens_dock, self.related_dock, self.search_dock, self.results_dock):
            view_menu.addAction(dock.toggleViewAction())
        self.offline_action = view_menu.addAction("&Offline")
        self.offline_action.setCheckable(True)
        self.offline_action.setChecked(self.service.offline)
        self.offline_action.toggled.connect(self.set_offline)

    # --- navigation ---

    def dataset(self) -> Dataset:
        """The dataset selected in the picker."""
        return self.registry.get(str(self.dataset_box.currentData()))

    def _refresh_results_if_shown(self, *_: object) -> None:
        if self.results_dock.isVisible():
            self.refresh_results()

    def refresh_results(self) -> None:
        """Reload the explained-neurons table of the current dataset (e.g. after a batch)."""
        rows = self.store.best_generated(self.dataset().name)
        self.results_dock.show_results([(r.layer, r.neuron, r.score, r.explanation) for r in rows])

    def _dataset_changed(self) -> None:
        dataset = self.dataset()
        self.layer_box.setRange(0, dataset.n_layers - 1)
        self.neuron_box.setRange(0, dataset.n_neurons - 1)
        menu = QtWidgets.QMenu(self.interesting_button)
        group = None
        for item in dataset.interesting:
            if item.group and item.group != group:
                group = item.group
                menu.addSection(group)
            action = menu.addAction(f"{item.layer}:{item.neuron}  {item.label}")
            action.setToolTip(plain_tooltip(item.description))
            action.triggered.connect(
                lambda _=False, i=item: self.go_to(dataset.name, i.layer, i.neuron)
            )
        if not dataset.interesting:
            menu.addAction("(no list for this dataset)").setEnabled(False)
        self.interesting_button.setMenu(menu)

    def _go_clicked(self) -> None:
        self.go_to(self.dataset().name, self.layer_box.value(), self.neuron_box.value())

    def go_to_layer_neuron(self, layer: int, neuron: int) -> None:
        """Go to a neuron of the current dataset."""
        self.go_to(self.dataset().name, layer, neuron)

    def _step(self, delta: int) -> None:
        if self.current is None:
            return
        name, layer, neuron = self.current
        dataset = self.registry.get(name)
        index = (layer * dataset.n_neurons + neuron + delta) % (
            dataset.n_layers * dataset.n_neurons
        )
        self.go_to(name, index // dataset.n_neurons, index % dataset.n_neurons)

    def random_neuron(self) -> None:
        """A random neuron: among those available offline when offline or bundled."""
        dataset = self.dataset()
        if self.service.offline or dataset.bundled:
            choices = self.service.available_neurons(dataset.name)
            if not choices:
                self.statusBar().showMessage(
                    "No neurons are available offline in this dataset", 5000
                )
                return
            layer, neuron = random.choice(choices)
        else:
            layer, neuron = random.randrange(dataset.n_layers), random.randrange(dataset.n_neurons)
        self.go_to(dataset.name, layer, neuron)

    def back(self) -> None:
        """Previous neuron in the history."""
        key = self.history.back()
        if key:
            self.go_to(*key, record=False)

    def forward(self) -> None:
        """Next neuron in the history."""
        key = self.history.forward()
        if key:
            self.go_to(*key, record=False)

    def _focus_picker(self) -> None:
        self.neuron_box.setFocus()
        self.neuron_box.selectAll()

    def go_to(self, dataset: str, layer: int, neuron: int, *, record: bool = True) -> None:
        """Show a neuron: cancel the previous load (and any run), then load this one."""
        try:
            ds = self.registry.get(dataset)
            ds.check(layer, neuron)
        except NeuronDeskError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return
        self.tasks.cancel("run")
        self.tasks.cancel("related")
        key = (ds.name, layer, neuron)
        self.current = key
        self.current_data = None
        if record:
            self.history.visit(key)
        self._sync_picker(ds, layer, neuron)
        self.title.setText(f"{ds.title} · layer {layer} · neuron {neuron}")
        self.subtitle.setText("loading…")
        self.explanations.set_entries([], "loading…")
        self.dataset_pane.show_message("loading…")
        self.tokens_dock.clear("loading…")
        self.related_dock.clear("loading…")
        self.settings.setValue("last_neuron", list(key))
        self.tasks.start("load", self._load(key))

    def _sync_picker(self, ds: Dataset, layer: int, neuron: int) -> None:
        index = self.dataset_box.findData(ds.name)
        if index != self.dataset_box.currentIndex():
            self.dataset_box.blockSignals(True)
            self.dataset_box.setCurrentIndex(index)
            self.dataset_box.blockSignals(False)
            self._dataset_changed()
        self.layer_box.setValue(layer)
        self.neuron_box.setValue(neuron)

    async def _load(self, key: NeuronKey) -> None:
        data = await self.service.neuron(*key)
        if key != self.current:  # a newer neuron was picked meanwhile
            return
        self.current_data = data
        self._show(data)
        neurons = self.related_dock.show_neuron(data)
        self.neuron_shown.emit(*key)
        if neurons:
            self.tasks.start("related", self._load_related(key, neurons))

    def _show(self, data: NeuronData) -> None:
        record = data.record
        origin = record.origin if isinstance(record, Fetched) else ""
        where = {
            "store": "from the local store",
            "bundled": "from the bundled sample",
            "network": "fetched from the network",
            "folder": "from a local folder",
        }.get(origin, "")
        self.subtitle.setText(where + (" · offline" if self.service.offline else ""))
        if isinstance(record, Fetched):
            self.dataset_pane.show_record(record.value)
        else:
            self.dataset_pane.show_message(str(record) if record else "no activation records")
        self.explanations.set_entries(self._entries(data), self._explanations_message(data))
        self.tokens_dock.show_neuron(data)

    def _entries(self, data: NeuronData) -> list[ExplanationEntry]:
        entries: list[ExplanationEntry] = []
        if isinstance(data.explanations, Fetched):
            results: NeuronSimulationResults = data.explanations.value
            for e in results.scored_explanations:
                entries.append(
                    ExplanationEntry(e.explanation, e.get_preferred_score(), "published", scored=e)
                )
        for row in self.store.explanations(data.dataset.name, data.layer, data.neuron):
            if row.source == "published":
                continue
            stored = self.store.explanation_result(row.id)
            scored = codec.loads(stored, ScoredExplanation) if stored else None
            entries.append(
                ExplanationEntry(
                    row.explanation,
                    row.score,
                    row.source,
                    method=str(row.provenance.get("method", "")),
                    model=str(row.provenance.get("model", "")),
                    created_at=row.created_at,
                    scored=scored,
                    usage=_usage_text(row.provenance.get("usage")),
                )
            )
        return entries

    def _explanations_message(self, data: NeuronData) -> str:
        if isinstance(data.explanations, NeuronDeskError):
            return str(data.explanations)
        if Kind.EXPLANATIONS not in data.dataset.kinds:
            return (
                f"{data.dataset.title} has no published explanations: "
                "generate one, or write your own."
            )
        return ""

    async def _load_related(self, key: NeuronKey, neurons: list[tuple[int, int]]) -> None:
        """Fill in each related neuron's best explanation, stored or published, one by one."""
        dataset = key[0]
        published = Kind.EXPLANATIONS in self.registry.get(dataset).kinds
        for layer, neuron in neurons:
            if key != self.current:
                return
            best: tuple[str, float | None] | None = None
            rows = self.store.explanations(dataset, layer, neuron)
            if rows:
                row = max(rows, key=lambda r: -2.0 if r.score is None else r.score)
                best = (row.explanation, row.score)
            elif published:
                try:
                    fetched = await self.service.get(dataset, Kind.EXPLANATIONS, layer, neuron)
                except NeuronDeskError:
                    fetched = None
                if fetched is not None and fetched.value.scored_explanations:
                    top = fetched.value.scored_explanations[0]
                    best = (top.explanation, top.get_preferred_score())
            text, score = best if best is not None else ("not explained yet", None)
            self.related_dock.set_explanation(layer, neuron, text, score)

    # --- search ---

    def _search(self) -> None:
        text = self.search_box.text().strip()
        self.search_results.clear()
        rows = self.store.search(text) if text else []
        for row in rows:
            score = "n/a" if row.score is None else f"{row.score:.2f}"
            item = QtWidgets.QListWidgetItem(
                f"{row.dataset} {row.layer}:{row.neuron} [{score}] {row.explanation.strip()}"
            )
            item.setData(Qt.ItemDataRole.UserRole, (row.dataset, row.layer, row.neuron))
            self.search_results.addItem(item)
        if text and not rows:
            self.search_results.addItem(
                "No stored explanation mentions that (only visited or fetched neurons are indexed)."
            )
        self.search_dock.show()
        self.search_dock.raise_()

    def _search_result_chosen(self, item: QtWidgets.QListWidgetItem) -> None:
        key = item.data(Qt.ItemDataRole.UserRole)
        if key:
            self.go_to(str(key[0]), int(key[1]), int(key[2]))

    # --- generate and score ---

    def _record_for_run(self) -> tuple[NeuronKey, NeuronRecord] | None:
        if self.runner is None:
            self.statusBar().showMessage(
                "No LLM endpoint is configured: open Settings to add one", 8000
            )
            return None
        if (
            self.current is None
            or self.current_data is None
            or not isinstance(self.current_data.record, Fetched)
        ):
            self.statusBar().showMessage("This neuron has no activation records to explain", 8000)
            return None
        return self.current, self.current_data.record.value

    def generate(self, samples: int) -> None:
        """Generate `samples` explanations of the current neuron and score each."""
        self._start_run(
            lambda runner, profile, key, record: runner.generate(
                profile,
                key,
                record,
                samples,
                self.explanations.set_progress,
                self.explanations.estimate.setText,
            ),
            samples,
        )

    def score_own(self, explanation: str) -> None:
        """Score an explanation the user wrote."""
        self._start_run(
            lambda runner, profile, key, record: runner.score(
                profile,
                key,
                record,
                explanation,
                self.explanations.set_progress,
                self.explanations.estimate.setText,
            ),
            1,
        )

    def _start_run(
        self, make_work: Callable[[Runner, str, NeuronKey, NeuronRecord], Any], samples: int
    ) -> None:
        target = self._record_for_run()
        if target is None or self.runner is None:
            return
        key, record = target
        profile = self.explanations.profile.currentText()
        self.explanations.estimate.setText(self.runner.describe_estimate(profile, samples, record))
        self.tasks.start("run", self._run(key, make_work(self.runner, profile, key, record)))

    async def _run(self, key: NeuronKey, work: Any) -> None:
        self.explanations.set_busy(True)
        self.statusBar().showMessage("Explaining and scoring…")
        try:
            await work
        finally:
            self.explanations.set_busy(False)
            if self.current == key and self.current_data is not None:
                self.explanations.set_entries(self._entries(self.current_data))
        self.statusBar().showMessage("Scoring finished; results are stored", 5000)
        self._refresh_results_if_shown()
        self.run_finished.emit("done")

    def cancel_run(self) -> None:
        """Stop the running generation or scoring (requests in flight are cancelled)."""
        if self.tasks.cancel("run"):
            self.explanations.set_busy(False)
            self.statusBar().showMessage(
                "Cancelled; results finished before the cancel are stored", 5000
            )
            self.run_finished.emit("cancelled")

    # --- export, offline, errors ---

    def export_current(self) -> None:
        """Export the current neuron's explanations and scores (upstream-readable JSON)."""
        if self.current is None:
            return
        dataset, layer, neuron = self.current
        default = f"{dataset}-{layer}-{neuron}.jsonl"
        dialog = QtWidgets.QFileDialog(
            self, "Export neuron", default, "JSON lines (*.jsonl *.json)"
        )
        dialog.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dialog.fileSelected.connect(self.export_to)
        dialog.open()

    def export_to(self, path: str) -> None:
        """Write the current neuron's export (and its provenance sidecar) to `path`."""
        if self.current is None:
            return
        data = self.current_data
        published = (
            data.explanations.value
            if data is not None and isinstance(data.explanations, Fetched)
            else None
        )
        export = export_neuron(
            self.store, self.current[0], self.current[1], self.current[2], published
        )
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(codec.dumps(export.results, upstream=True) + "\n")
            with open(path + ".provenance.json", "w", encoding="utf-8") as f:
                json.dump(export.provenance, f, indent=1)
        except OSError as exc:
            self.statusBar().showMessage(f"Could not export: {exc.strerror}", 8000)
            return
        self.statusBar().showMessage(
            f"Exported {len(export.results.scored_explanations)} explanations to {path}", 8000
        )

    def export_all_generated(self) -> None:
        """Export every neuron with generated results of the current dataset (one line each)."""
        dialog = QtWidgets.QFileDialog(
            self,
            "Export generated results",
            f"{self.dataset().name}-generated.jsonl",
            "JSON lines (*.jsonl)",
        )
        dialog.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dialog.fileSelected.connect(self.export_generated_to)
        dialog.open()

    def export_generated_to(self, path: str) -> None:
        """Write one NeuronSimulationResults line per neuron with generated explanations."""
        try:
            count = export_generated(self.store, self.dataset().name, path)
        except OSError as exc:
            self.statusBar().showMessage(f"Could not export: {exc.strerror}", 8000)
            return
        self.statusBar().showMessage(
            f"Exported generated results of {count} neurons to {path}", 8000
        )

    def open_settings(self) -> QtWidgets.QDialog:
        """The settings dialog (non-modal, opened with open())."""
        from neuron_desk.llm.profiles import ProfileConfig
        from neuron_desk.qt.settingsdialog import SettingsDialog

        config = getattr(self.runner, "config", None)
        if not isinstance(config, ProfileConfig):
            try:
                config = ProfileConfig.load()
            except NeuronDeskError as exc:
                self.statusBar().showMessage(str(exc), 8000)
                config = ProfileConfig()
        dialog = SettingsDialog(
            self, config, self.registry, self.store, self.service.offline, self.tasks.start
        )
        dialog.data.offline_changed.connect(self.offline_action.setChecked)
        dialog.finished.connect(lambda _result: self._settings_closed(config))
        dialog.open()
        return dialog

    def _settings_closed(self, config: Any) -> None:
        if self.runner is None:
            return
        self.tasks.start("reload", self.runner.reload(config))
        self.explanations.set_profiles(self.runner.profile_names(), self.runner.default_profile())

    def set_offline(self, offline: bool) -> None:
        """Switch offline mode (misses then say 'not available offline' at once)."""
        self.service.offline = offline
        self.settings.setValue("offline", offline)
        self._update_offline_label()
        if self.current is not None:
            self.go_to(*self.current, record=False)

    def _update_offline_label(self) -> None:
        self.offline_label.setText("offline" if self.service.offline else "online")

    def _task_failed(self, name: str, error: BaseException) -> None:
        message = (
            str(error) if isinstance(error, NeuronDeskError) else f"{type(error).__name__}: {error}"
        )
        if name == "run":
            self.explanations.details.setText(message)
            self.run_finished.emit(message)
        self.statusBar().showMessage(message, 15000)

    # --- state ---

    def restore_state(self) -> None:
        """Window geometry, docks and the last neuron, from QSettings."""
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QtCore.QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("state")
        if isinstance(state, QtCore.QByteArray):
            self.restoreState(state)
        splitter = self.settings.value("splitter")
        if isinstance(splitter, QtCore.QByteArray):
            self.splitter.restoreState(splitter)

    def last_neuron(self) -> NeuronKey | None:
        """The neuron shown when the app was last closed, if it still exists."""
        value = self.settings.value("last_neuron")
        try:
            name, layer, neuron = str(value[0]), int(value[1]), int(value[2])
            self.registry.get(name).check(layer, neuron)
        except (TypeError, ValueError, IndexError, NeuronDeskError):
            return None
        return name, layer, neuron

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        self.settings.setValue("splitter", self.splitter.saveState())
        super().closeEvent(event)


def _usage_text(usage: Any) -> str:
    if not isinstance(usage, dict):
        return ""
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    requests = usage.get("requests")
    text = f"{prompt + completion} tokens"
    if requests is not None:
        text += f" in {requests} requests"
    return text
