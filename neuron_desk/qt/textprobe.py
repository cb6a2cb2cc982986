"""The "Test your own text" dock: paste text, run the model on it in-process, and see the
current neuron's (or latent's) activations painted like the excerpts; score the shown
explanation on it (real next to simulated) and keep it as a user record of the unit.

The widgets only lay out and show: the model runs through the desk (`Desk.probe_text`, on a
worker thread) as named operations that never touch a widget, and report through callbacks.
The text is untrusted: it is painted token by token by the heatmap delegate, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.model import ActivationRecord, NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset
from neuron_desk.desk import Desk
from neuron_desk.qt.asyncbridge import TaskSlots, error_message
from neuron_desk.qt.heatmap import HeatmapRow, HeatmapView, RowRole, RowsModel
from neuron_desk.qt.models import format_score

if TYPE_CHECKING:  # the LLM stack and the runs load when the dock first runs, not with the window
    from neuron_desk.llm.profiles import Profile
    from neuron_desk.qt.operations import Reporter
    from neuron_desk.runs.estimate import RunEstimate
    from neuron_desk.runs.run import ScoreOutcome

Qt = QtCore.Qt
Status = Callable[[str], object]

RUN_TASK = "probe.run"
"""Running the model on the text (loading it first when needed)."""
SCORE_TASK = "probe.score"
"""Simulating the shown explanation on the text."""


@dataclass
class Probed:
    """The text's activations for one unit, and its score once the explanation is simulated."""

    ref: NeuronRef
    record: ActivationRecord
    scale: float
    outcome: ScoreOutcome | None = None


class ProbeModel(RowsModel):
    """The probed text as one heatmap row (with the simulation under it once scored)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[HeatmapRow] = []

    def show(self, probed: Probed | None) -> None:
        """Show a probed text (None clears)."""
        self.beginResetModel()
        self._rows = []
        if probed is not None:
            row = HeatmapRow(probed.record.tokens, probed.record.activations, probed.scale)
            outcome = probed.outcome
            simulated = _simulated(outcome)
            if outcome is not None and simulated is not None:
                row.simulated = simulated
                row.simulated_scale = max(simulated, default=0.0) or 1.0
                row.caption = f"r={format_score(outcome.preferred_score())}"
            self._rows = [row]
        self.endResetModel()

    def row(self) -> HeatmapRow | None:
        """The row shown, if any."""
        return self._rows[0] if self._rows else None

    def row_data(self, row: int, role: int) -> object:
        heatmap = self._rows[row]
        if role == RowRole:
            return heatmap
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return "your text: " + "".join(heatmap.tokens)
        return None


def _simulated(outcome: ScoreOutcome | None) -> list[float] | None:
    if outcome is None or outcome.scored is None:
        return None
    sequences = outcome.scored.scored_simulation.scored_sequence_simulations
    return list(sequences[0].simulation.expected_activations) if sequences else None


def score_summary(outcome: ScoreOutcome) -> str:
    """The score of an explanation on the text, and what simulated it."""
    method = outcome.method.value if outcome.method else "no simulator"
    scorer = outcome.provenance.get("scorer", "simulation")
    return (
        f"score on this text {format_score(outcome.preferred_score())} · {scorer} by "
        f"{method} ({outcome.model}) · “{outcome.explanation.strip()}”"
    )


class TextProbePanel(QtWidgets.QWidget):
    """Paste text, Run, see the unit's activations; score the explanation; keep the record."""

    record_added = QtCore.Signal(object)
    """A user record was stored for this unit (its `NeuronRef`)."""

    def __init__(self, desk: Desk, tasks: TaskSlots, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.desk = desk
        self.tasks = tasks
        self.ref: NeuronRef | None = None
        self.unit_record: NeuronRecord | None = None
        self.probed: Probed | None = None
        self.explanation: Callable[[], str | None] = lambda: None
        """The explanation shown (the window: the one selected in the explanation pane)."""
        self.profile: Callable[[], Profile] = desk.profile
        """The profile to simulate with (the window: the one picked in the explanation pane)."""
        self.settings = QtCore.QSettings()
        """When to ask before sending (the window's settings: Settings → Runs)."""
        self.confirmation: QtWidgets.QDialog | None = None
        self.text = QtWidgets.QPlainTextEdit(self)
        self.text.setPlaceholderText("Paste or write a text, then Run")
        self.text.setAccessibleName("Your text")
        self.text.setTabChangesFocus(True)
        self.run_button = QtWidgets.QPushButton("&Run", self)
        self.run_button.setAccessibleName("Run the model on your text")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QtWidgets.QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_button = QtWidgets.QPushButton("Model…", self)
        self.model_button.setToolTip("Choose the model folder or GGUF file of this dataset")
        self.model_button.clicked.connect(self.choose_model)
        self.score_button = QtWidgets.QPushButton("&Score the explanation on this text", self)
        self.score_button.setEnabled(False)
        self.score_button.clicked.connect(self.score)
        self.add_button = QtWidgets.QPushButton("&Add as a user record", self)
        self.add_button.setEnabled(False)
        self.add_button.clicked.connect(self.add_record)
        self.status = QtWidgets.QLabel(self)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Text test status")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rows = ProbeModel(self)
        self.view = HeatmapView(self)
        self.view.setModel(self.rows)
        self.view.setAccessibleName("Activations on your text")
        buttons = QtWidgets.QHBoxLayout()
        for button in (self.run_button, self.cancel_button, self.model_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.score_button)
        actions.addWidget(self.add_button)
        actions.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.view, 2)
        layout.addLayout(actions)
        self.show_unit(None, None)

    # --- what the window tells it ---

    def show_unit(self, ref: NeuronRef | None, record: NeuronRecord | None) -> None:
        """The window shows another unit: earlier results belong to the old one."""
        if ref != self.ref:
            self.tasks.cancel(RUN_TASK)
            self.tasks.cancel(SCORE_TASK)
            self._set_probed(None)
        self.ref, self.unit_record = ref, record
        dataset = self.desk.dataset(ref.dataset) if ref is not None else None
        self.run_button.setEnabled(ref is not None)
        self.status.setText(self._describe(ref, dataset) if ref is not None else "")

    def _describe(self, ref: NeuronRef, dataset: Dataset | None) -> str:
        assert dataset is not None
        return (
            f"Run to see {dataset.unit} {ref.index} of {dataset.layer_label(ref.layer)} "
            "on your text (the model runs on this computer)."
        )

    # --- operations ---

    def run(self) -> None:
        """Run the model on the text and show the unit's activations (loading it first)."""
        ref, text = self.ref, self.text.toPlainText()
        if ref is None:
            return
        scale = self.unit_record.max_activation if self.unit_record is not None else 0.0

        from neuron_desk.qt.operations import Operation

        async def work(report: Reporter) -> Probed:
            def loading() -> None:
                report.estimate("loading the model… (once per dataset; it can take a minute)")

            record = await self.desk.probe_text(ref, text, loading)
            top = max((abs(v) for v in record.activations), default=0.0)
            return Probed(ref, record, scale if scale > 0 else top)

        self._set_probed(None)
        self.status.setText("running…")
        self._busy(True)
        operation = Operation(self.tasks, RUN_TASK, work)
        operation.estimate(self.status.setText).success(self._probed).failure(self._failed)
        operation.finished(lambda: self._busy(False)).run()

    def _probed(self, probed: Probed) -> None:
        if probed.ref != self.ref:
            return
        self._set_probed(probed)
        values = probed.record.activations
        peak = max(range(len(values)), key=values.__getitem__)
        dataset = self.desk.dataset(probed.ref.dataset)
        self.status.setText(
            f"{len(values)} tokens · max {values[peak]:.3f} on {probed.record.tokens[peak]!r} "
            f"· colours scaled to the {dataset.unit}'s max activation {probed.scale:.3f}"
        )

    def score(self) -> None:
        """Simulate the shown explanation on the text with the current profile's simulator."""
        probed, record, explanation = self.probed, self.unit_record, self.explanation()
        if probed is None or record is None:
            return
        if not explanation:
            self.status.setText("No explanation is shown: generate one or write your own first")
            return
        try:
            profile = self.profile()
        except NeuronDeskError as exc:  # no such profile, a broken profiles file
            self.status.setText(error_message(exc))
            return

        from neuron_desk.qt.operations import Operation
        from neuron_desk.qt.runconfirm import RunConfirmation, needs_confirmation
        from neuron_desk.runs.options import RunOptions

        options = RunOptions.for_profile(profile, samples=1)

        async def estimating(_: Reporter) -> RunEstimate:
            run = self.desk.dry_run(profile, options)
            return await run.estimate_score(record, explanation, on=[probed.record])

        async def work(_: Reporter) -> ScoreOutcome:
            run = self.desk.run(profile, options)
            return await self.desk.score_on_text(run, record, explanation, probed.record)

        def start() -> None:
            if probed is not self.probed:  # another text or unit since the estimate
                return
            self.status.setText(f"simulating “{explanation.strip()}” on your text…")
            self._busy(True)
            operation = Operation(self.tasks, SCORE_TASK, work)
            operation.success(lambda outcome: self._scored(probed, outcome)).failure(self._failed)
            operation.finished(lambda: self._busy(False)).run()

        def estimated(estimate: RunEstimate) -> None:
            if probed is not self.probed:
                return
            if not needs_confirmation(estimate, profile, self.settings):
                start()
                return
            self.confirmation = RunConfirmation(self, estimate, profile, self.settings)
            self.confirmation.accepted.connect(start)
            self.confirmation.rejected.connect(
                lambda: self.status.setText("Not scored: nothing was sent")
            )
            self.confirmation.open()

        # Like every run: the estimate first, and a yes before anything billable is sent.
        self.status.setText("estimating what scoring on this text sends…")
        estimate = Operation(self.tasks, SCORE_TASK, estimating)
        estimate.success(estimated).failure(self._failed).run()

    def _scored(self, probed: Probed, outcome: ScoreOutcome) -> None:
        if probed is not self.probed:
            return
        probed.outcome = outcome
        self.rows.show(probed)
        self.status.setText(score_summary(outcome))

    def add_record(self) -> None:
        """Keep the text's activations as a user record of the unit (not in the dataset)."""
        probed = self.probed
        if probed is None:
            return
        self.desk.add_user_record(probed.ref, probed.record, probed.outcome)
        self.add_button.setEnabled(False)
        self.status.setText("Added to “Your texts” in Activations (kept apart from the dataset)")
        self.record_added.emit(probed.ref)

    def cancel(self) -> None:
        """Stop the running model or simulation (a model still loading finishes loading)."""
        for name in (RUN_TASK, SCORE_TASK):
            if self.tasks.cancel(name):
                self.status.setText("cancelled")

    def choose_model(self) -> QtWidgets.QFileDialog | None:
        """Ask for this dataset's model (a folder, or a GGUF file), remembered per dataset."""
        if self.ref is None:
            return None
        dialog = QtWidgets.QFileDialog(self, "Model of this dataset (a folder or a .gguf file)")
        dialog.setFileMode(QtWidgets.QFileDialog.FileMode.AnyFile)
        dialog.setNameFilter("GGUF or config (*.gguf config.json)")
        dataset = self.ref.dataset

        def chosen(path: str) -> None:
            folder = path[: -len("config.json")] if path.endswith("config.json") else path
            self.set_model(dataset, folder)

        dialog.fileSelected.connect(chosen)
        dialog.open()
        return dialog

    def set_model(self, dataset: str, path: str | None) -> None:
        """Use this model for `dataset` from now on (it is loaded on the next Run)."""
        self.desk.set_probe_model(dataset, path)
        self.status.setText(f"Model for {dataset}: {path or 'the one it ships with'}")

    # --- state shown ---

    def _set_probed(self, probed: Probed | None) -> None:
        self.probed = probed
        self.rows.show(probed)
        self.score_button.setEnabled(probed is not None)
        self.add_button.setEnabled(probed is not None)

    def _busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy and self.ref is not None)
        self.cancel_button.setEnabled(busy)
        self.score_button.setEnabled(not busy and self.probed is not None)

    def _failed(self, error: Exception) -> None:
        self.status.setText(error_message(error))


class TextProbeDock(QtWidgets.QDockWidget):
    """The panel in a dock (View → Test your own text; Run → Test your own text…)."""

    def __init__(self, desk: Desk, tasks: TaskSlots, parent: QtWidgets.QWidget | None = None):
        super().__init__("Test your own text", parent)
        self.setObjectName("TextProbeDock")
        self.panel = TextProbePanel(desk, tasks, self)
        self.setWidget(self.panel)

    def open(self) -> None:
        """Show the dock and put the cursor in the text."""
        self.show()
        self.raise_()
        self.panel.text.setFocus()
