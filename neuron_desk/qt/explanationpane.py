"""The explanation pane: explanations with scores, generate & score, your own hypothesis, and
the scoring details (real vs simulated activations per sequence)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.model import ScoredExplanation
from neuron_desk.data.explanations import NeuronExplanation, with_second_opinions
from neuron_desk.data.registry import Kind
from neuron_desk.data.service import NeuronData
from neuron_desk.qt.heatmap import HeatmapRow, HeatmapView, RowRole, RowsModel
from neuron_desk.qt.models import (
    NOT_COMPARABLE,
    ExplanationsModel,
    ScoreSortProxy,
    format_score,
    method_label,
    opinions_text,
)

Qt = QtCore.Qt
MARGIN = 4
"""Space left and right of a cell's text in a table (about the style's item margin)."""
OPINIONS_COLUMN = ExplanationsModel.COLUMNS.index("2nd opinions")
"""Shown only when an explanation listed has a second opinion."""


def why_none_listed(data: NeuronData) -> str:
    """Why a neuron lists no published explanations ("" when it may have some)."""
    if isinstance(data.explanations, NeuronDeskError):
        return str(data.explanations)
    if Kind.EXPLANATIONS not in data.dataset.kinds:
        return (
            f"{data.dataset.title} has no published explanations: "
            "generate one, or write your own."
        )
    return ""


def usage_text(usage: object) -> str:
    """A run's token usage from its provenance, e.g. "1234 tokens in 12 requests"."""
    if not isinstance(usage, dict):
        return ""
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    requests = usage.get("requests")
    text = f"{prompt + completion} tokens"
    if requests is not None:
        text += f" in {requests} requests"
    return text


class SimulationModel(RowsModel):
    """One row per scored sequence: real activations with the simulation underneath."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[HeatmapRow] = []

    def set_scored(self, scored: ScoredExplanation | None) -> None:
        """Show the sequences of a scored explanation (None clears)."""
        self.beginResetModel()
        self._rows = []
        if scored is not None:
            sequences = scored.scored_simulation.scored_sequence_simulations
            real_scale = max((a for s in sequences for a in s.true_activations), default=0.0)
            simulated_scale = max(
                (v for s in sequences for v in s.simulation.expected_activations), default=0.0
            )
            for s in sequences:
                self._rows.append(
                    HeatmapRow(
                        tokens=s.simulation.tokens,
                        activations=s.true_activations,
                        scale=real_scale,
                        simulated=s.simulation.expected_activations,
                        simulated_scale=simulated_scale or 1.0,
                        caption=f"r={format_score(s.ev_correlation_score)}",
                    )
                )
        self.endResetModel()

    def row_data(self, row: int, role: int) -> object:
        heatmap = self._rows[row]
        if role == RowRole:
            return heatmap
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return f"sequence {row + 1}, {heatmap.caption}: " + "".join(heatmap.tokens)
        return None


class ExplanationPane(QtWidgets.QWidget):
    """Lists explanations; starts generation and scoring through callbacks set by the window."""

    generate_requested = QtCore.Signal(int)
    """Generate & score this many explanations."""
    score_requested = QtCore.Signal(str)
    """Score this explanation written by the user."""
    cancel_requested = QtCore.Signal()
    settings_requested = QtCore.Signal()
    """The user wants to set up an endpoint."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ExplanationsModel(self)
        self.proxy = ScoreSortProxy(self.model, self)
        self.proxy.sort_best_first()
        self.table = QtWidgets.QTableView(self)
        self.table.setModel(self.proxy)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(
            1, QtWidgets.QHeaderView.ResizeMode.Stretch
        )
        self.table.setAccessibleName("Explanations of this neuron")
        # The score column is as wide as the widest of its title, "−0.00" and "n/a" (not
        # measured again at every neuron); the title and "−0.00" side by side took ~35
        # pixels more, which the explanation missed in a narrow window.
        header = self.table.horizontalHeader()
        widest = max(self.fontMetrics().horizontalAdvance(t) for t in ("−0.00", "n/a"))
        header.resizeSection(0, max(header.sectionSizeHint(0), widest + 2 * MARGIN + 4))
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table.installEventFilter(self)  # its resizes fit the columns (`_fit_columns`)
        self.table.setColumnHidden(OPINIONS_COLUMN, True)  # until an entry has a second opinion

        self.profile = QtWidgets.QComboBox(self)
        self.profile.setAccessibleName("LLM endpoint profile")
        self.profile.setToolTip("Endpoint used to explain and simulate (Settings to edit)")
        self.samples = QtWidgets.QSpinBox(self)
        self.samples.setRange(1, 10)
        self.samples.setValue(3)
        self.samples.setPrefix("samples: ")
        self.samples.setAccessibleName("Number of explanations to sample")
        self.generate_button = QtWidgets.QPushButton("&Generate && score", self)
        self.generate_button.setAccessibleName("Generate and score explanations")
        self.generate_button.clicked.connect(
            lambda: self.generate_requested.emit(self.samples.value())
        )
        self.cancel_button = QtWidgets.QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested.emit)
        self.progress = QtWidgets.QProgressBar(self)
        self.progress.setVisible(False)
        self.progress.setAccessibleName("Scoring progress")
        self.estimate = QtWidgets.QLabel(self)
        self.estimate.setTextFormat(Qt.TextFormat.PlainText)
        self.estimate.setWordWrap(True)
        self.estimate.setAccessibleName("Estimate of the run")
        self.estimate.hide()

        self.problem = QtWidgets.QLabel(self)
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setWordWrap(True)
        self.problem.setAccessibleName("Endpoint problem")
        self.setup_button = QtWidgets.QPushButton("Set up an endpoint…", self)
        self.setup_button.clicked.connect(self.settings_requested.emit)
        self._error_shown = False

        self.own = QtWidgets.QLineEdit(self)
        self.own.setPlaceholderText("Write your own explanation, e.g. “words about the weather”")
        self.own.setAccessibleName("Your explanation")
        self.own.returnPressed.connect(self._score_own)
        self.score_button = QtWidgets.QPushButton("&Score it", self)
        self.score_button.setAccessibleName("Score your explanation")
        self.score_button.clicked.connect(self._score_own)

        self.details = QtWidgets.QLabel(self)
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        self.details.setWordWrap(True)
        self.details.setAccessibleName("Score summary")
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.side_by_side = QtWidgets.QCheckBox("side by side", self)
        self.side_by_side.setToolTip(
            "Real | simulated activations in two aligned columns, instead of the simulation "
            "as a bar under each token"
        )
        self.simulations = SimulationModel(self)
        self.simulation_view = HeatmapView(self)
        self.simulation_view.setModel(self.simulations)
        self.delegate = self.simulation_view.delegate
        self.simulation_view.setAccessibleName("Real and simulated activations")
        self.side_by_side.toggled.connect(self._toggle_side_by_side)

        controls = QtWidgets.QHBoxLayout()
        for widget in (self.profile, self.samples, self.generate_button, self.cancel_button):
            controls.addWidget(widget)
        controls.addWidget(self.progress, 1)
        own_row = QtWidgets.QHBoxLayout()
        own_row.addWidget(self.own, 1)
        own_row.addWidget(self.score_button)
        details_row = QtWidgets.QHBoxLayout()
        details_row.addWidget(QtWidgets.QLabel("<b>Scoring details</b>", self))
        details_row.addStretch(1)
        details_row.addWidget(self.side_by_side)
        self.legend = QtWidgets.QLabel(self)
        details_row.addWidget(self.legend)
        self._show_legend(False)

        rows = self.table.verticalHeader()
        rows.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setMinimumHeight(self.table_height(4))  # at least 4 rows, at any DPI
        splitter = QtWidgets.QSplitter(Qt.Orientation.Vertical, self)
        splitter.setChildrenCollapsible(False)
        top = QtWidgets.QWidget()
        top_layout = QtWidgets.QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.setSpacing(3)
        top_layout.addWidget(QtWidgets.QLabel("<b>Explanations</b>"))
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(controls)
        problem_row = QtWidgets.QHBoxLayout()
        problem_row.addWidget(self.problem, 1)
        problem_row.addWidget(self.setup_button)
        top_layout.addLayout(problem_row)
        self.show_endpoint_problem("")
        top_layout.addWidget(self.estimate)
        top_layout.addLayout(own_row)
        bottom = QtWidgets.QWidget()
        bottom_layout = QtWidgets.QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.setSpacing(2)
        bottom_layout.addLayout(details_row)
        bottom_layout.addWidget(self.details)
        bottom_layout.addWidget(self.simulation_view, 1)
        self.simulation_view.setMinimumHeight(self.fontMetrics().height() * 3)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        self.splitter = splitter
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    # --- content ---

    def set_entries(self, entries: list[NeuronExplanation], message: str = "") -> None:
        """List explanations, best score first; select the best one."""
        self.table.clearSelection()
        listed = with_second_opinions(entries)
        self.model.set_items(listed)
        hidden = not any(e.opinions for e in listed)
        if self.table.isColumnHidden(OPINIONS_COLUMN) != hidden:
            self.table.setColumnHidden(OPINIONS_COLUMN, hidden)
            self._fit_columns()
        self.details.setText(message)
        self._error_shown = False
        self.simulations.set_scored(None)
        if self.proxy.rowCount():
            self.table.selectRow(0)

    def entries(self) -> list[NeuronExplanation]:
        """The listed explanations, in display order."""
        return [self._entry(row) for row in range(self.proxy.rowCount())]

    def shown_explanation(self) -> str | None:
        """The explanation selected in the table (else the best listed), if any."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedIndexes()})
        if rows:
            return self._entry(rows[0]).explanation
        return self._entry(0).explanation if self.proxy.rowCount() else None

    def _entry(self, row: int) -> NeuronExplanation:
        return self.model.item(self.proxy.mapToSource(self.proxy.index(row, 0)).row())

    def set_profiles(self, names: list[str], current: str) -> None:
        """Fill the profile selector."""
        self.profile.clear()
        self.profile.addItems(names)
        if current in names:
            self.profile.setCurrentText(current)

    def set_busy(self, busy: bool, maximum: int = 0) -> None:
        """Show progress and enable Cancel while a run goes on."""
        self.generate_button.setEnabled(not busy)
        self.score_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)
        self.progress.setRange(0, maximum)
        self.progress.setValue(0)

    def set_progress(self, done: int, total: int) -> None:
        """Advance the progress bar."""
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _selection_changed(self) -> None:
        rows = {i.row() for i in self.table.selectionModel().selectedIndexes()}
        if rows:
            self.show_details(self._entry(min(rows)))

    def show_details(self, entry: NeuronExplanation) -> None:
        """The scoring details of one explanation."""
        self.simulations.set_scored(entry.scored)
        opinions = opinions_text(entry.opinions)
        if entry.scorer != "simulation":
            metrics = entry.provenance.get("metrics") or {}
            accuracy = format_score(metrics.get("balanced_accuracy"))
            self.details.setText(
                f"{entry.scorer}: balanced accuracy {accuracy}"
                f" · precision {format_score(metrics.get('precision'))} · recall "
                f"{format_score(metrics.get('recall'))} · F1 {format_score(metrics.get('f1'))} · "
                + (f"AUC {format_score(metrics.get('auc'))}" if metrics.get("auc_source") != "none"
                   else "AUC n/a")
                + f" · {metrics.get('n_answered', '?')}/{metrics.get('n_excerpts', '?')} excerpts"
            )  # fmt: skip
            return
        notes = _notes(entry, opinions)
        if entry.scored is None:
            text = f"{entry.explanation.strip()} — not scored here ({entry.source})"
            self.details.setText(" · ".join([text, *notes]))
            return
        s = entry.scored.scored_simulation
        parts = [
            f"score {format_score(s.ev_correlation_score)}",
            f"R² {format_score(s.rsquared_score)}",
            f"abs. dev. {format_score(s.absolute_dev_explained_score)}",
            f"{len(s.scored_sequence_simulations)} seq.",
        ]
        if entry.method:
            parts.append(method_label(entry.method))
        if entry.model:
            parts.append(entry.model)
        usage = usage_text(entry.provenance.get("usage"))
        if usage:
            parts.append(usage)
        self.details.setText(" · ".join(parts + notes))
        self.details.setToolTip(
            "score: correlation of real and simulated activations · R²: coefficient of "
            "determination · abs. dev.: absolute deviation explained · seq.: sequences scored"
        )

    def table_height(self, rows: int) -> int:
        """Height of the explanations table showing `rows` rows and its header."""
        header = max(
            self.table.horizontalHeader().sizeHint().height(), self.fontMetrics().height() + 8
        )
        frame = 2 * self.table.frameWidth()
        return header + rows * self.table.verticalHeader().defaultSectionSize() + frame + 2

    def show_endpoint_problem(self, text: str) -> None:
        """Why the picked profile can't run, with a button to Settings (hidden when none)."""
        self.problem.setText(text)
        self.problem.setVisible(bool(text))
        self.setup_button.setVisible(bool(text))

    def show_error(self, message: str) -> None:
        """A run's error, in place of the score summary until the next run."""
        self.details.setText(message)
        self._error_shown = True

    def clear_error(self) -> None:
        """Back to the selected explanation's summary, if an error was shown."""
        if self._error_shown:
            self._error_shown = False
            self.details.setText("")
            self._selection_changed()

    def show_estimate(self, text: str) -> None:
        """The run's estimate on one compact line (hidden when empty)."""
        self.estimate.setText(" · ".join(line for line in text.splitlines() if line.strip()))
        self.estimate.setVisible(bool(text))

    def name_units(self, unit: str) -> None:
        """Say "neuron" or "latent" as the shown dataset names its units."""
        self._unit = unit
        self.table.setAccessibleName(f"Explanations of this {unit}")
        self._show_legend(self.side_by_side.isChecked())

    def _show_legend(self, side_by_side: bool) -> None:
        unit = getattr(self, "_unit", "neuron")
        self.legend.setText(
            f"left: the {unit} · right: the simulation"
            if side_by_side
            else f"green: the {unit} · blue bar: the simulation"
        )

    def _toggle_side_by_side(self, on: bool) -> None:
        self._show_legend(on)
        self.delegate.side_by_side = on
        self.simulation_view.relayout()

    def _score_own(self) -> None:
        text = self.own.text().strip()
        if text and self.score_button.isEnabled():
            self.score_requested.emit(text)

    def focus_generate(self) -> Callable[[], None]:
        """A callback that starts generation (for a keyboard shortcut)."""
        return self.generate_button.click

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self.simulation_view.relayout()

    DETAIL_WIDTH = (56, 100)
    """The narrowest and widest the columns after the explanation get (source, simulator,
    model, when, second opinions); never narrower than their title."""

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if watched is self.table and isinstance(event, QtGui.QResizeEvent):
            self._fit_columns(event.size().width())
        return False

    def _fit_columns(self, width: int | None = None) -> None:
        """Leave the explanation half the table or more: the columns after it narrow (down to
        `DETAIL_WIDTH`'s least) when the table does. At their fixed 100 pixels, a table 520
        pixels wide left the explanation 35."""
        header = self.table.horizontalHeader()
        details = [c for c in range(2, header.count()) if not header.isSectionHidden(c)]
        if not details:
            return
        if width is None:  # the table's (its viewport's is updated after its resize event)
            width = self.table.width()
        room = width - 2 * self.table.frameWidth() - header.sectionSize(0)
        least, most = self.DETAIL_WIDTH
        each = min(most, room // 2 // len(details))
        metrics = header.fontMetrics()
        for column in details:
            title = str(self.proxy.headerData(column, Qt.Orientation.Horizontal) or "")
            width = max(least, each, metrics.horizontalAdvance(title) + 2 * MARGIN + 6)
            if header.sectionSize(column) != width:
                header.resizeSection(column, width)


def _notes(entry: NeuronExplanation, opinions: str) -> list[str]:
    """What qualifies a simulation score: where its values came from, written digits, the
    original's compatibility setting, and the second opinions on the same explanation."""
    notes = []
    sources = entry.provenance.get("value_sources")
    if isinstance(sources, dict) and (sources.get("written_digit") or sources.get("missing")):
        notes.append(
            f"{sources.get('distribution', 0)} from distributions / "
            f"{sources.get('written_digit', 0)} written / {sources.get('missing', 0)} missing"
        )
    if entry.method in NOT_COMPARABLE:
        notes.append("written digits, no logprobs: not comparable with logprob scores")
    if (entry.provenance.get("parameters") or {}).get("compatibility") == "original":
        notes.append("original-compatible")
    if opinions:
        notes.append(f"second opinions: {opinions}")
    return notes
