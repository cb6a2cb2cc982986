"""The main window: lays out the picker, the explanation and dataset panes and the docks, and
connects them to the browser state (which neuron, loading) and the operations (runs, exports).
It reads nothing itself: every question goes to the browser, the operations or the desk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.model import ActivationRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.exports import NeuronExport
from neuron_desk.data.registry import Dataset
from neuron_desk.data.service import Fetched, NeuronData
from neuron_desk.desk import Desk
from neuron_desk.qt.asyncbridge import TaskSlots, error_message
from neuron_desk.qt.browser import WELCOME_SEEN_KEY, BrowserState
from neuron_desk.qt.collector import SwitchCollector
from neuron_desk.qt.datasetpane import DatasetPane, where_from
from neuron_desk.qt.docks import BatchResultsDock, RelatedNeuronsDock, SearchDock, TopTokensDock
from neuron_desk.qt.explanationpane import ExplanationPane, why_none_listed
from neuron_desk.qt.heatmap import HeatmapView
from neuron_desk.qt.helpmenu import HelpMenu
from neuron_desk.qt.picker import NeuronPicker
from neuron_desk.qt.style import slice_frames
from neuron_desk.qt.textprobe import TextProbeDock

if TYPE_CHECKING:  # the runner and the welcome page load the LLM stack: built when first used
    from neuron_desk.llm.profiles import ProfileConfig
    from neuron_desk.qt.operations import Operations
    from neuron_desk.qt.runconfirm import RunConfirmation
    from neuron_desk.qt.runflow import RunFlow
    from neuron_desk.qt.welcome import WelcomePage

Qt = QtCore.Qt
SaveTo = Callable[[str], object]


def _add_action(
    menu: QtWidgets.QMenu, text: str, slot: Callable[[], object], shortcut: str
) -> QtGui.QAction:
    """A menu action whose text changes later (neuron or latent)."""
    action = QtGui.QAction(text, menu)
    action.setShortcut(shortcut)
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


TALL_ENOUGH = 900
"""A window at least this tall has room for the docks one above the other."""


class MainWindow(QtWidgets.QMainWindow):
    """The app's window over one desk; long work runs as named tasks that can be cancelled.

    What a neuron needs to be shown is built at once; the LLM runner (operations, run flow,
    the endpoint profiles) with `start_runner` or when first used, the welcome page when first
    shown, so the first neuron is painted without loading the LLM stack.
    """

    neuron_shown = QtCore.Signal(object)
    """Emitted when all panes show a neuron (its `NeuronRef`)."""
    run_finished = QtCore.Signal(str)
    """Emitted when a generate/score run ends: "done", "cancelled" or the error."""

    def __init__(self, desk: Desk, settings: QtCore.QSettings) -> None:
        super().__init__()
        self.desk = desk
        self.settings = settings
        self.tasks = TaskSlots(self._task_failed)
        self.browser = BrowserState(desk, settings, self.tasks, self)
        self.collector = SwitchCollector(self)  # no memory work in the middle of a switch
        self.browser.loading.connect(self.collector.pause)
        self.browser.failed.connect(self.collector.resume)
        self.neuron_shown.connect(self.collector.shown)
        self._ops: Operations | None = None
        self._runs: RunFlow | None = None
        self._welcome: WelcomePage | None = None
        self._docks_hidden: list[QtWidgets.QDockWidget] = []
        self.setWindowTitle("neuron-desk")
        self.setObjectName("MainWindow")
        self.picker = NeuronPicker(desk.registry.all(), self, self.browser.with_data)
        self.addToolBar(self.picker)
        self._build_central()
        self._build_docks()
        self._build_menus()
        self._slice_frames()
        self.offline_label = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.offline_label)
        self._offline_shown(desk.offline)
        self._connect()
        self._dataset_shown(self.browser.dataset)

    def _slice_frames(self) -> None:
        """The big frames drawn from small copies of themselves (`style.SlicedFrames`: the
        style's own pixels, antialiased once instead of at every paint): the excerpt lists,
        the explanations table, the tab panes and the two wide line edits; a few hundred
        microseconds each here. Not the trees, the small lists and the headers: every cell
        of theirs would go through Python to be drawn, which costs more than it saves."""
        slice_frames(
            *self.findChildren(HeatmapView),
            self.explanations.table,
            *self.findChildren(QtWidgets.QTabWidget),
            self.explanations.own,
            self.picker.search_box,
        )

    @property
    def ops(self) -> Operations:
        """The operations (runs, probes, exports), made when first needed."""
        if self._ops is None:
            from neuron_desk.qt.operations import Operations

            self._ops = Operations(self.desk, self.tasks)
        return self._ops

    @property
    def runs(self) -> RunFlow:
        """The run flow (generate and score), started when first needed."""
        return self.start_runner()

    def start_runner(self) -> RunFlow:
        """Build the LLM runner and list the endpoint profiles (once): the app calls it after
        the first neuron is painted; a run, the settings or the welcome page call it too."""
        if self._runs is None:
            from neuron_desk.qt.runflow import RunFlow

            runs = self._runs = RunFlow(
                self, self.explanations, self.ops, self.browser, self.settings
            )
            runs.finished.connect(self.run_finished.emit)
            runs.succeeded.connect(self._refresh_results_if_shown)
            self.explanations.profile.currentTextChanged.connect(lambda _: runs.check_endpoint())
            self._profiles_changed()
        return self._runs

    @property
    def welcome(self) -> WelcomePage:
        """The welcome page, built when first shown."""
        if self._welcome is None:
            from neuron_desk.qt.welcome import WelcomePage

            welcome = self._welcome = WelcomePage(self)
            self.pages.addWidget(welcome)
            welcome.neuron_requested.connect(self.browser.go_to)
            welcome.random_requested.connect(lambda: self.browser.random())
            welcome.dismissed.connect(self.show_browser)
            welcome.profiles_saved.connect(self._settings_closed)
        return self._welcome

    # --- building ---

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
        for label in (self.title, self.subtitle):  # a long title wraps, it never widens the window
            label.setWordWrap(True)
        self.explanations = ExplanationPane(self)
        self.dataset_pane = DatasetPane(self)
        self.splitter = QtWidgets.QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setObjectName("CentralSplitter")
        self.splitter.addWidget(self.explanations)
        self.splitter.addWidget(self.dataset_pane)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.browser_page = QtWidgets.QWidget(self)
        layout = QtWidgets.QVBoxLayout(self.browser_page)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.splitter, 1)
        self.pages = QtWidgets.QStackedWidget(self)
        self.pages.addWidget(self.browser_page)
        self.setCentralWidget(self.pages)

    def _build_docks(self) -> None:
        go = self.browser.go_to
        self.tokens_dock = TopTokensDock(self)
        self.related_dock = RelatedNeuronsDock(go, self)
        self.search_dock = SearchDock(go, self)
        self.results_dock = BatchResultsDock(go, self)
        right, left = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea
        self.addDockWidget(right, self.tokens_dock)
        self.addDockWidget(right, self.related_dock)
        self.addDockWidget(left, self.search_dock)
        self.addDockWidget(left, self.results_dock)
        self.search_dock.hide()
        self.results_dock.hide()
        self.probe_dock = TextProbeDock(self.desk, self.tasks, self)
        self.probe_dock.panel.explanation = self.explanations.shown_explanation
        self.probe_dock.panel.settings = self.settings
        self.probe_dock.panel.profile = lambda: self.ops.profile(
            self.explanations.profile.currentText()
        )
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.probe_dock)
        self.probe_dock.hide()

    def _build_menus(self) -> None:
        keys = QtGui.QKeySequence.StandardKey
        file_menu = self.menuBar().addMenu("&File")
        export = _add_action(file_menu, "&Export this neuron…", self.export_current, "Ctrl+E")
        file_menu.addAction("Export all &generated results…", self.export_all_generated)
        file_menu.addSeparator()
        file_menu.addAction("&Settings…", self.open_settings, "Ctrl+,")
        file_menu.addSeparator()
        file_menu.addAction("&Quit", self.close, keys.Quit)
        go_menu = self.menuBar().addMenu("&Go")
        go_menu.addAction(self.picker.back_action)
        go_menu.addAction(self.picker.forward_action)
        next_unit = _add_action(go_menu, "&Next neuron", self.browser.next, "Ctrl+]")
        previous_unit = _add_action(go_menu, "&Previous neuron", self.browser.previous, "Ctrl+[")
        go_menu.addAction(self.picker.random_action)
        pick = _add_action(go_menu, "&Pick a neuron", self.picker.focus, "Ctrl+L")
        self._shown_unit_actions = [
            (export, "&Export this {unit}…"),
            (next_unit, "&Next {unit}"),
            (previous_unit, "&Previous {unit}"),
        ]
        """Actions on the neuron shown: named as its dataset names its units."""
        self._shown_unit = ""
        """The unit they are named for now."""
        self._pick_action = pick
        """Named as the dataset picked names them."""
        go_menu.addAction("&Search explanations", self.picker.search_box.setFocus, "Ctrl+F")
        run_menu = self.menuBar().addMenu("&Run")
        run_menu.addAction(
            "&Generate && score", lambda: self.generate(self.explanations.samples.value()), "Ctrl+G"
        )
        run_menu.addAction("&Cancel", self.cancel_run, "Esc")
        run_menu.addAction("&Test your own text…", self.open_text_probe, "Ctrl+T")
        view_menu = self.menuBar().addMenu("&View")
        for dock in self._docks():
            view_menu.addAction(dock.toggleViewAction())
        self.offline_action = view_menu.addAction("&Offline")
        self.offline_action.setCheckable(True)
        self.offline_action.setChecked(self.desk.offline)
        self.help_menu = HelpMenu(self, self.show_welcome)
        self.menuBar().addMenu(self.help_menu)

    def _connect(self) -> None:
        browser, picker = self.browser, self.picker
        picker.dataset_picked.connect(browser.set_dataset)
        picker.go_requested.connect(browser.go)
        picker.neuron_picked.connect(browser.go_to)
        picker.search_requested.connect(self.search)
        picker.back_action.triggered.connect(browser.back)
        picker.forward_action.triggered.connect(browser.forward)
        picker.random_action.triggered.connect(lambda: browser.random())
        browser.dataset_changed.connect(self._dataset_shown)
        self._clear_timer = QtCore.QTimer(self, singleShot=True, interval=100)
        self._clear_timer.timeout.connect(self._clear_panes)
        self._shown: NeuronData | None = None
        browser.loading.connect(self._loading)
        browser.loaded.connect(self._loaded)
        browser.failed.connect(lambda _ref, message: self.statusBar().showMessage(message, 8000))
        browser.related_explained.connect(self.related_dock.set_explanation)
        browser.offline_changed.connect(self._offline_shown)
        self.offline_action.toggled.connect(browser.set_offline)
        self.results_dock.visibilityChanged.connect(lambda _: self._refresh_results_if_shown())
        self.explanations.generate_requested.connect(self.generate)
        self.explanations.score_requested.connect(self.score_own)
        self.explanations.cancel_requested.connect(self.cancel_run)
        self.explanations.settings_requested.connect(self.open_settings)
        self.probe_dock.panel.record_added.connect(self._user_record_added)

    # --- showing what the browser says ---

    def _dataset_shown(self, dataset: Dataset) -> None:
        self.picker.show_dataset(dataset)
        if self._welcome is not None and self.pages.currentWidget() is self._welcome:
            self._welcome.show_dataset(dataset)  # its buttons open the dataset picked
        self._pick_action.setText(f"&Pick a {dataset.unit}")
        shown = self.browser.current
        if shown is None or shown.dataset == dataset.name:
            self._name_shown_units(dataset)
        # else the panes keep showing (and the actions keep acting on) the neuron of the
        # dataset before, until one of this dataset is opened
        self._refresh_results_if_shown()

    def _name_shown_units(self, dataset: Dataset) -> None:
        """Say "neuron" or "latent" where the window speaks of the unit shown (at each pick:
        only a change of unit renames anything)."""
        if dataset.unit == self._shown_unit:
            return
        self._shown_unit = dataset.unit
        for action, text in self._shown_unit_actions:
            action.setText(text.format(unit=dataset.unit))
        self.explanations.name_units(dataset.unit)

    def _refresh_results_if_shown(self) -> None:
        if self.results_dock.isVisible():
            self.refresh_results()

    def refresh_results(self) -> None:
        """Reload the explained-neurons table of the picked dataset (e.g. after a batch)."""
        dataset = self.browser.dataset
        self.results_dock.show_results(self.desk.best_results(dataset.name), dataset)

    def show_welcome(self) -> None:
        """The welcome page (first start, Help → Welcome); any neuron opened leaves it."""
        self.start_runner()
        self.welcome.show_dataset(self.browser.dataset)
        try:
            config = self.desk.profiles
            default = self.ops.default_profile_name()
        except NeuronDeskError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return
        self.welcome.show_endpoint(config, self.ops.endpoint_problem(default), default)
        if self.pages.currentWidget() is not self.welcome:  # the page gets the whole window
            self._docks_hidden = [d for d in self._docks() if d.isVisible()]
            for dock in self._docks_hidden:
                dock.hide()
        self.pages.setCurrentWidget(self.welcome)

    def _docks(self) -> list[QtWidgets.QDockWidget]:
        return [
            self.tokens_dock, self.related_dock, self.search_dock, self.results_dock,
            self.probe_dock,
        ]  # fmt: skip

    def show_browser(self) -> None:
        """Leave the welcome page for the panes (later starts open here)."""
        if self._welcome is not None and self.pages.currentWidget() is self._welcome:
            self.settings.setValue(WELCOME_SEEN_KEY, True)
            for dock in self._docks_hidden:
                dock.show()
            self._docks_hidden = []
        self.pages.setCurrentWidget(self.browser_page)

    def _loading(self, ref: NeuronRef) -> None:
        self.show_browser()
        if self._runs is not None:
            self._runs.neuron_changed()  # a run belongs to the neuron it started on
        self.picker.show_neuron(ref)
        dataset = self.desk.dataset(ref.dataset)
        self._name_shown_units(dataset)
        title = f"{dataset.title} · {dataset.layer_label(ref.layer)} · {dataset.unit} {ref.index}"
        self.title.setText(title)
        self.title.setAccessibleName(f"Current {dataset.unit}")
        unit = dataset.unit.capitalize()
        self.setWindowTitle(f"{unit} {ref.layer}:{ref.index} · {dataset.title} · neuron-desk")
        self.subtitle.setText("loading…")
        self.probe_dock.panel.show_unit(ref, None)  # earlier text results were the old unit's
        # The panes say "loading…" only if the neuron is not there within 100 ms:
        # clearing and painting them for a few milliseconds cost as much as filling them.
        self._clear_timer.start()

    def _clear_panes(self) -> None:
        self.explanations.set_entries([], "loading…")
        self.dataset_pane.show_message("loading…")
        self.tokens_dock.clear("loading…")
        self.related_dock.clear("loading…")

    def _loaded(self, ref: NeuronRef, data: NeuronData) -> None:
        self._clear_timer.stop()
        # The neuron shown before is let go of after this one is painted: freeing its parsed
        # files (tens of thousands of objects for a GPT-2 XL neuron) took 1-2 ms of the switch.
        self.collector.release_after_paint(self._shown)
        self._shown = data
        self.subtitle.setText(where_from(data) + (" · offline" if self.desk.offline else ""))
        self.dataset_pane.show_neuron(data, self._user_records(ref))
        record = data.record.value if isinstance(data.record, Fetched) else None
        self.probe_dock.panel.show_unit(ref, record)
        self.explanations.set_entries(self.browser.listed_explanations(), why_none_listed(data))
        self.tokens_dock.show_neuron(data)
        with_data = self.browser.with_data()
        self.related_dock.show_neuron(data, set(with_data) if with_data is not None else None)
        if with_data is not None and not isinstance(data.record, Fetched):
            in_layer = sum(1 for r in with_data if r.layer == ref.layer)
            reason = str(data.record) if data.record else "no activation records"
            ds = data.dataset
            self.dataset_pane.show_message(
                f"This {ds.unit} is empty here ({reason}). {in_layer} of {ds.n_neurons}"
                f" {ds.units} of {ds.layer_label(ref.layer)} have data; Next and Previous move"
                " among them."
            )
            self.dataset_pane.offer_nearby(self.desk.nearest_with_data(ref), self.browser.go_to)
        self.neuron_shown.emit(ref)

    def _user_records(self, ref: NeuronRef) -> list[ActivationRecord]:
        return [user.record for user in self.desk.user_records_of(ref)]

    def _user_record_added(self, ref: NeuronRef) -> None:
        data = self.browser.data
        if data is not None and data.ref == ref:
            self.dataset_pane.show_neuron(data, self._user_records(ref))

    def _offline_shown(self, offline: bool) -> None:
        self.offline_action.setChecked(offline)
        self.offline_label.setText("offline" if offline else "online")

    def search(self, text: str) -> None:
        """Search the stored explanations and list what matches."""
        self.search_dock.show_results(text, self.desk.search(text) if text else [])

    # --- generate and score (the run flow does it) ---

    def generate(self, samples: int) -> None:
        """Generate `samples` explanations of the current neuron and score each."""
        self.runs.generate(samples)

    def score_own(self, explanation: str) -> None:
        """Score an explanation the user wrote."""
        self.runs.score_own(explanation)

    def cancel_run(self) -> None:
        """Stop the running generation or scoring."""
        if self._runs is not None:
            self._runs.cancel()

    @property
    def confirmation(self) -> RunConfirmation | None:
        """The open "send this run?" question, if any."""
        return self._runs.confirmation if self._runs is not None else None

    # --- export, settings, errors ---

    def _save_dialog(self, title: str, default: str, filters: str, chosen: SaveTo) -> None:
        dialog = QtWidgets.QFileDialog(self, title, default, filters)
        dialog.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dialog.fileSelected.connect(chosen)
        dialog.open()

    def export_current(self) -> None:
        """Export the current neuron's explanations and scores (upstream-readable JSON)."""
        ref = self.browser.current
        if ref is not None:
            default = f"{ref.dataset}-{ref.layer}-{ref.index}.jsonl"
            filters = "JSON lines (*.jsonl *.json)"
            self._save_dialog("Export neuron", default, filters, self.export_to)

    def export_to(self, path: str) -> asyncio.Task[None] | None:
        """Write the current neuron's export (and its provenance sidecar) to `path`."""
        ref = self.browser.current
        if ref is None:
            return None

        def done(export: NeuronExport) -> None:
            count = len(export.results.scored_explanations)
            self.statusBar().showMessage(f"Exported {count} explanations to {path}", 8000)

        operation = self.ops.export_neuron(ref, self.browser.data, path)
        return operation.success(done).failure(self._export_failed).run()

    def export_all_generated(self) -> None:
        """Export every neuron with generated results of the picked dataset (one line each)."""
        default = f"{self.browser.dataset.name}-generated.jsonl"
        self._save_dialog(
            "Export generated results", default, "JSON lines (*.jsonl)", self.export_generated_to
        )

    def export_generated_to(self, path: str) -> asyncio.Task[None]:
        """Write one NeuronSimulationResults line per neuron with generated explanations."""
        operation = self.ops.export_generated(self.browser.dataset.name, path)

        def done(count: int) -> None:
            units = self.browser.dataset.units if count != 1 else self.browser.dataset.unit
            message = f"Exported generated results of {count} {units} to {path}"
            self.statusBar().showMessage(message, 8000)

        return operation.success(done).failure(self._export_failed).run()

    def _export_failed(self, error: Exception) -> None:
        reason = error.strerror if isinstance(error, OSError) else error_message(error)
        self.statusBar().showMessage(f"Could not export: {reason}", 8000)

    def open_settings(self) -> QtWidgets.QDialog:
        """The settings dialog (non-modal, opened with open())."""
        from neuron_desk.llm.profiles import ProfileConfig
        from neuron_desk.qt.settingsdialog import SettingsDialog

        self.start_runner()
        try:
            config = self.desk.profiles
        except NeuronDeskError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            config = ProfileConfig(path=self.desk.paths.profiles)
        dialog = SettingsDialog(self, self.desk, self.ops, config, self.settings)
        dialog.data.offline_changed.connect(self.offline_action.setChecked)
        dialog.finished.connect(lambda _result: self._settings_closed(config))
        dialog.open()
        return dialog

    def _settings_closed(self, config: ProfileConfig) -> None:
        self.ops.use_profiles(config).success(lambda _: self._profiles_changed()).run()

    def _profiles_changed(self) -> None:
        try:
            names, default = self.ops.profile_names(), self.ops.default_profile_name()
        except NeuronDeskError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return
        self.explanations.set_profiles(names, default)
        self.runs.check_endpoint()
        if self._welcome is not None:  # its endpoint line says what runs use now
            self._welcome.show_endpoint(
                self.desk.profiles, self.ops.endpoint_problem(default), default
            )

    def _task_failed(self, _name: str, error: BaseException) -> None:
        self.statusBar().showMessage(error_message(error), 15000)

    # --- window state ---

    def restore_state(self) -> bool:
        """Window geometry, docks and the splitter, from QSettings; False if none was kept.
        A window without its geometry (none kept, or kept on a screen of another width,
        which Qt refuses: 20% narrower or wider) is fitted to the screen."""
        done = {}
        for key, restore in (
            ("geometry", self.restoreGeometry),
            ("state", self.restoreState),
            ("splitter", self.splitter.restoreState),
        ):
            value = self.settings.value(key)
            done[key] = isinstance(value, QtCore.QByteArray) and bool(restore(value))
        self._size_to_screen(done["geometry"])
        if self.probe_dock.isVisibleTo(self):  # kept open below the panes of a taller window
            self._place_text_probe()
            layout = self.layout()
            if layout is not None:
                layout.activate()  # the least size without it below the panes, before resizing
            self._size_to_screen(done["geometry"])  # below the panes, it held the window taller
        return any(done.values())

    def _size_to_screen(self, kept: bool) -> None:
        """Fitted to the screen when no geometry was `kept` (Qt's default 640×480 otherwise);
        a kept one bounded by the screen, which may be smaller."""
        if not kept:
            self.fit_to_screen()
        elif QtGui.QGuiApplication.platformName() != "offscreen":
            self.resize(self.size().boundedTo(self.screen().availableGeometry().size()))

    def fit_to_screen(self) -> None:
        """Most of the screen's free area, at least 1200×800 where there is room (HiDPI:
        Qt counts in device-independent pixels)."""
        free = self.screen().availableGeometry().size()
        size = QtCore.QSize(max(1200, int(free.width() * 0.85)), max(800, int(free.height() * 0.9)))
        if QtGui.QGuiApplication.platformName() != "offscreen":  # a real screen bounds it
            size = size.boundedTo(free)
        self.resize(size)
        self.arrange_docks()

    def open_text_probe(self) -> None:
        """Show "Test your own text" with the cursor in its text: below the panes in a window
        tall enough for them all, else as a tab beside the top tokens (below them at
        1024×700, the panes' least heights made the window 752 px tall, past the screen)."""
        self._place_text_probe()
        self.probe_dock.open()

    def _place_text_probe(self) -> None:
        """The text probe's dock below the panes, or beside the top tokens in a short window."""
        dock = self.probe_dock
        if dock.isFloating():
            return
        tabbed = dock in self.tabifiedDockWidgets(self.tokens_dock)
        if self.height() < TALL_ENOUGH and not tabbed:
            self.tabifyDockWidget(self.tokens_dock, dock)
        elif self.height() >= TALL_ENOUGH and tabbed:
            self.removeDockWidget(dock)
            self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)

    def arrange_docks(self) -> None:
        """Docks that don't fit one above the other become tabs; a third of the width."""
        tall_enough = self.height() >= TALL_ENOUGH
        tabbed = self.related_dock in self.tabifiedDockWidgets(self.tokens_dock)
        if not tall_enough and not tabbed:
            self.tabifyDockWidget(self.tokens_dock, self.related_dock)
            self.tokens_dock.raise_()
        elif tall_enough and tabbed:  # room again: one above the other
            self.removeDockWidget(self.related_dock)
            right = Qt.DockWidgetArea.RightDockWidgetArea
            self.addDockWidget(right, self.related_dock, Qt.Orientation.Vertical)
            self.related_dock.show()
        if self.results_dock not in self.tabifiedDockWidgets(self.search_dock):
            self.tabifyDockWidget(self.search_dock, self.results_dock)
        width = max(280, min(self.width() // 3, 520))
        self.resizeDocks([self.tokens_dock], [width], Qt.Orientation.Horizontal)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.collector.resume()  # a switch cut short by closing leaves collection on
        self.browser.save_position()
        # The docks as the browser has them: closed on the welcome page, whose docks are
        # hidden, the next start would restore a window without any.
        for dock in self._docks_hidden:
            dock.show()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        self.settings.setValue("splitter", self.splitter.saveState())
        super().closeEvent(event)
