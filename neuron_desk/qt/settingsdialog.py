"""Settings: LLM endpoint profiles (with a connection test), data sources and offline mode,
and the store's size with per-dataset clearing. Opened with `open()`, never `exec()`."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.data.registry import ALL_KINDS, Dataset
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import METHODS, Profile, ProfileConfig
from neuron_desk.qt.operations import Operations, probe_failure
from neuron_desk.qt.runconfirm import RunsPage

Qt = QtCore.Qt


class ProfilesPage(QtWidgets.QWidget):
    """Edit endpoint profiles; the key is never typed here, only where it comes from."""

    def __init__(self, config: ProfileConfig, ops: Operations) -> None:
        super().__init__()
        self.config = config
        self.ops = ops
        self.list = QtWidgets.QListWidget(self)
        self.list.setAccessibleName("Profiles")
        self.list.currentTextChanged.connect(self._load)
        self.name = QtWidgets.QLineEdit(self)
        self.base_url = QtWidgets.QLineEdit(self)
        self.base_url.setPlaceholderText("http://127.0.0.1:8000/v1")
        self.key_source = QtWidgets.QLineEdit(self)
        self.key_source.setPlaceholderText("env:OPENAI_API_KEY, keyring or none")
        self.key_source.setToolTip(
            "Where the API key is read from; the key itself is never stored here"
        )
        self.explainer = QtWidgets.QLineEdit(self)
        self.simulator = QtWidgets.QLineEdit(self)
        self.method = QtWidgets.QComboBox(self)
        self.method.addItems(list(METHODS))
        self.concurrency = QtWidgets.QSpinBox(self)
        self.concurrency.setRange(1, 256)
        self.timeout = QtWidgets.QDoubleSpinBox(self)
        self.timeout.setRange(1, 3600)
        self.timeout.setSuffix(" s")
        self.budget_tokens = QtWidgets.QSpinBox(self)
        self.budget_tokens.setRange(0, 2_000_000_000)
        self.budget_tokens.setSingleStep(100_000)
        self.budget_tokens.setSpecialValueText("no cap")
        self.budget_tokens.setSuffix(" tokens")
        self.budget_usd = QtWidgets.QDoubleSpinBox(self)
        self.budget_usd.setRange(0, 100_000)
        self.budget_usd.setDecimals(2)
        self.budget_usd.setSpecialValueText("no cap")
        self.budget_usd.setPrefix("$")
        self.default = QtWidgets.QCheckBox("default profile", self)
        form = QtWidgets.QFormLayout()
        for label, widget in (
            ("Name", self.name),
            ("Base URL", self.base_url),
            ("API key from", self.key_source),
            ("Explainer model", self.explainer),
            ("Simulator model", self.simulator),
            ("Simulator", self.method),
            ("Max concurrent requests", self.concurrency),
            ("Timeout", self.timeout),
            ("Budget per run", self.budget_tokens),
            ("Money per run", self.budget_usd),
        ):
            widget.setAccessibleName(label)
            form.addRow(label, widget)
        form.addRow("", self.default)
        save = QtWidgets.QPushButton("Save profile", self)
        save.clicked.connect(self.save)
        self.test_button = QtWidgets.QPushButton("Test connection", self)
        self.test_button.clicked.connect(self.test_connection)
        self.result = QtWidgets.QLabel(self)
        self.result.setTextFormat(Qt.TextFormat.PlainText)
        self.result.setWordWrap(True)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(save)
        buttons.addWidget(self.test_button)
        right = QtWidgets.QVBoxLayout()
        right.addLayout(form)
        right.addLayout(buttons)
        right.addWidget(self.result, 1)
        layout = QtWidgets.QHBoxLayout(self)
        layout.addWidget(self.list, 1)
        layout.addLayout(right, 2)
        self._refresh()

    def _refresh(self, select: str | None = None) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        names = [p.name for p in self.config.all()]
        self.list.addItems(names)
        self.list.addItem("+ new profile")
        self.list.blockSignals(False)
        self.list.setCurrentRow(names.index(select) if select in names else 0)

    def _load(self, name: str) -> None:
        try:
            profile = self.config.get(name)
        except NeuronDeskError:
            profile = Profile(name="new", base_url="http://127.0.0.1:8000/v1")
        self.name.setText(profile.name)
        self.base_url.setText(profile.base_url)
        self.key_source.setText(profile.api_key)
        self.explainer.setText(profile.explainer_model)
        self.simulator.setText(profile.simulator_model)
        self.method.setCurrentText(profile.simulator_method)
        self.concurrency.setValue(profile.max_concurrency)
        self.timeout.setValue(profile.timeout)
        self.budget_tokens.setValue(profile.budget_tokens or 0)
        self.budget_usd.setValue(profile.budget_usd or 0.0)
        self.default.setChecked(self.config.default == profile.name)
        self.result.setText("")
        self.ops.cancel(Operations.PROBE_TASK)  # a test of another profile ends here
        self.test_button.setEnabled(True)

    def profile(self) -> Profile:
        """The profile as edited (raises BackendConfigError when a field is wrong)."""
        return Profile(
            name=self.name.text().strip(),
            base_url=self.base_url.text().strip(),
            api_key=self.key_source.text().strip() or "none",
            explainer_model=self.explainer.text().strip(),
            simulator_model=self.simulator.text().strip(),
            max_concurrency=self.concurrency.value(),
            timeout=self.timeout.value(),
            simulator_method=self.method.currentText(),
            budget_tokens=self.budget_tokens.value() or None,
            budget_usd=self.budget_usd.value() or None,
        )

    def save(self) -> None:
        """Validate and save the profile to the profiles file."""
        try:
            profile = self.profile()
            self.config.put(profile)
            if self.default.isChecked():
                self.config.default = profile.name
            path = self.config.save()
        except (NeuronDeskError, OSError) as exc:
            self.result.setText(str(exc))
            return
        self._refresh(select=profile.name)
        self.result.setText(f"Saved to {path}")

    def test_connection(self) -> None:
        """Probe the endpoint: which simulators it supports (remembered in the store)."""
        try:
            profile = self.profile()
        except NeuronDeskError as exc:
            self.result.setText(str(exc))
            return
        self.result.setText("Testing…")
        self.test_button.setEnabled(False)
        probe = self.ops.probe(profile).success(self.result.setText)
        probe.failure(lambda exc: self.result.setText(probe_failure(profile, exc)))
        probe.finished(lambda: self.test_button.setEnabled(True)).run()


class DataPage(QtWidgets.QWidget):
    """Offline mode, the store's size with clearing, and adding a folder or mirror dataset."""

    offline_changed = QtCore.Signal(bool)

    def __init__(self, desk: Desk) -> None:
        super().__init__()
        self.desk = desk
        self.offline = QtWidgets.QCheckBox("Offline: use only stored and bundled data", self)
        self.offline.setChecked(desk.offline)
        self.offline.toggled.connect(self.offline_changed.emit)
        self.stats = QtWidgets.QTableWidget(0, 3, self)
        self.stats.setHorizontalHeaderLabels(["dataset", "kind", "files"])
        self.stats.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.stats.setAccessibleName("Stored files")
        self.size_label = QtWidgets.QLabel(self)
        self.clear_box = QtWidgets.QComboBox(self)
        self.clear_box.setAccessibleName("Dataset to clear")
        clear = QtWidgets.QPushButton("Clear stored files", self)
        clear.setToolTip("Generated explanations are kept")
        clear.clicked.connect(self.clear)
        self.new_name = QtWidgets.QLineEdit(self)
        self.new_name.setPlaceholderText("name, e.g. my-mirror")
        self.new_location = QtWidgets.QLineEdit(self)
        self.new_location.setPlaceholderText("https://… or /path/to/folder in the public layout")
        self.new_like = QtWidgets.QComboBox(self)
        self.new_like.addItems([d.name for d in desk.registry.all()])
        add = QtWidgets.QPushButton("Add dataset", self)
        add.clicked.connect(self.add_dataset)
        self.message = QtWidgets.QLabel(self)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)
        clear_row = QtWidgets.QHBoxLayout()
        clear_row.addWidget(self.clear_box, 1)
        clear_row.addWidget(clear)
        add_form = QtWidgets.QFormLayout()
        add_form.addRow("Name", self.new_name)
        add_form.addRow("Location", self.new_location)
        add_form.addRow("Same shape as", self.new_like)
        add_form.addRow("", add)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.offline)
        layout.addWidget(self.size_label)
        layout.addWidget(self.stats, 1)
        layout.addLayout(clear_row)
        layout.addWidget(QtWidgets.QLabel("<b>Add a dataset</b> (a folder or an HTTP mirror)"))
        layout.addLayout(add_form)
        layout.addWidget(self.message)
        self.refresh()

    def refresh(self) -> None:
        """Show the store's size and stored files."""
        stats = self.desk.cache_stats()
        rows = stats["files"]
        self.stats.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate((row["dataset"], row["kind"], str(row["count"]))):
                self.stats.setItem(i, j, QtWidgets.QTableWidgetItem(text))
        self.size_label.setText(f"Store: {stats['path']} ({stats['bytes'] / 1e6:.1f} MB)")
        self.clear_box.clear()
        self.clear_box.addItem("all datasets", None)
        for name in sorted({row["dataset"] for row in rows}):
            self.clear_box.addItem(name, name)

    def clear(self) -> None:
        """Forget the stored files of the chosen dataset (or all)."""
        dataset = self.clear_box.currentData()
        count = self.desk.clear_cache(dataset)
        self.message.setText(f"Removed {count} stored files")
        self.refresh()

    def add_dataset(self) -> None:
        """Register a folder or a mirror with the shape of an existing dataset."""
        location = self.new_location.text().strip()
        try:
            like = self.desk.dataset(self.new_like.currentText())
            remote = location.startswith(("http://", "https://"))
            dataset = Dataset(
                name=self.new_name.text().strip(),
                title=self.new_name.text().strip(),
                model=like.model,
                n_layers=like.n_layers,
                n_neurons=like.n_neurons,
                kinds=ALL_KINDS,
                tokenizer=like.tokenizer,
                base_url=location if remote else None,
                folder=None if remote else location,
            )
            if not dataset.name:
                raise ValueError("give the dataset a name")
            self.desk.registry.add(dataset)
        except (NeuronDeskError, ValueError) as exc:
            self.message.setText(str(exc))
            return
        self.message.setText(f"Added {dataset.name}; it is in the dataset list after a restart")


class SettingsDialog(QtWidgets.QDialog):
    """Profiles and data settings; changes apply when saved or toggled."""

    def __init__(
        self,
        parent: QtWidgets.QWidget,
        desk: Desk,
        ops: Operations,
        config: ProfileConfig,
        settings: QtCore.QSettings | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("SettingsDialog")
        self.resize(820, 520)
        tabs = QtWidgets.QTabWidget(self)
        self.profiles = ProfilesPage(config, ops)
        self.data = DataPage(desk)
        tabs.addTab(self.profiles, "LLM endpoints")
        tabs.addTab(self.data, "Data")
        self.runs = RunsPage(settings) if settings is not None else None
        if self.runs is not None:
            tabs.addTab(self.runs, "Runs")
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close, self)
        close.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(tabs)
        layout.addWidget(close)
