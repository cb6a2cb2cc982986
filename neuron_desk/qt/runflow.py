"""Generate & score and Score it, from the click to the stored result: the endpoint check,
the estimate, the "send this run?" question, the run with its progress, and what the pane and
the status bar say — with every report of a stale run (another neuron, a later run) dropped.
The window creates one and connects its signals; the work itself is in `Operations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.service import Fetched
from neuron_desk.qt.asyncbridge import error_message
from neuron_desk.qt.browser import BrowserState
from neuron_desk.qt.explanationpane import ExplanationPane
from neuron_desk.qt.operations import Operation, Operations
from neuron_desk.qt.runconfirm import RunConfirmation, needs_confirmation
from neuron_desk.runs.estimate import RunEstimate

P = ParamSpec("P")


def _while(current: Callable[[], bool], callback: Callable[P, object]) -> Callable[P, None]:
    """`callback`, called only while `current()` holds (a stale run's reports are dropped)."""

    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        if current():
            callback(*args, **kwargs)

    return guarded


class RunFlow(QtCore.QObject):
    """One run at a time for the window's current neuron."""

    finished = QtCore.Signal(str)
    """A run ended: "done", "cancelled", "declined" (nothing sent) or the error."""
    succeeded = QtCore.Signal()
    """A run's results are stored."""

    def __init__(
        self,
        window: QtWidgets.QMainWindow,
        pane: ExplanationPane,
        ops: Operations,
        browser: BrowserState,
        settings: QtCore.QSettings,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.pane = pane
        self.ops = ops
        self.browser = browser
        self.settings = settings
        self._run_serial = 0
        self.confirmation: RunConfirmation | None = None
        """The open "send this run?" question, if any."""

    def neuron_changed(self) -> None:
        """The window shows another neuron: the run (cancelled) and its reports are stale."""
        self.ops.cancel(Operations.RUN_TASK)
        self._run_serial += 1
        self.clear()

    def _run_target(self) -> tuple[NeuronRef, NeuronRecord] | None:
        ref, data = self.browser.current, self.browser.data
        if ref is None or data is None or not isinstance(data.record, Fetched):
            unit = self.browser.dataset.unit
            self.window.statusBar().showMessage(
                f"This {unit} has no activation records to explain", 8000
            )
            return None
        return ref, data.record.value

    def generate(self, samples: int) -> None:
        """Generate `samples` explanations of the current neuron and score each (after the
        estimate, and the user's yes when it is billable)."""
        target = self._run_target()
        if target is not None:
            profile = self.pane.profile.currentText()
            self._estimate_then_run(
                target[0],
                profile,
                self.ops.estimate_generate(target[1], profile, samples),
                lambda: self.ops.generate(*target, profile, samples),
            )

    def score_own(self, explanation: str) -> None:
        """Score an explanation the user wrote (after the estimate, and a yes if billable)."""
        target = self._run_target()
        if target is not None:
            profile = self.pane.profile.currentText()
            self._estimate_then_run(
                target[0],
                profile,
                self.ops.estimate_score(target[1], profile, explanation),
                lambda: self.ops.score(*target, profile, explanation),
            )

    def _estimate_then_run(
        self,
        ref: NeuronRef,
        profile_name: str,
        estimating: Operation[RunEstimate],
        run: Callable[[], Operation[Any]],
    ) -> None:
        self.clear()  # a new run clears the last one's error and estimate
        problem = self.check_endpoint()
        if problem is not None:
            self.window.statusBar().showMessage(problem, 15000)
            return
        self._run_serial += 1
        serial = self._run_serial

        def current() -> bool:
            return serial == self._run_serial and self.browser.current == ref

        def estimated(estimate: RunEstimate) -> None:
            if not current():
                return
            profile = self.ops.profile(profile_name)
            if not needs_confirmation(estimate, profile, self.settings):
                self._start_run(ref, run())
                return
            self.confirmation = RunConfirmation(self.window, estimate, profile, self.settings)
            self.confirmation.accepted.connect(_while(current, lambda: self._start_run(ref, run())))
            self.confirmation.rejected.connect(lambda: self._run_declined(serial))
            self.confirmation.open()

        self.pane.set_busy(True)
        estimating.estimate(_while(current, self.pane.show_estimate))
        estimating.finished(_while(current, lambda: self.pane.set_busy(False)))
        estimating.success(estimated).failure(self._run_failed).run()

    def _run_declined(self, serial: int) -> None:
        if serial == self._run_serial:
            self.window.statusBar().showMessage("Nothing was sent", 5000)
            self.finished.emit("declined")

    def clear(self) -> None:
        """Forget the previous run: its status, estimate, error and pending confirmation."""
        if self.confirmation is not None:
            self.confirmation.done(QtWidgets.QDialog.DialogCode.Rejected)
            self.confirmation = None
        self.window.statusBar().clearMessage()
        self.pane.show_estimate("")
        self.pane.clear_error()
        self.pane.set_busy(False)

    def check_endpoint(self) -> str | None:
        """Say (in the pane) when the picked profile can't run, pointing to Settings."""
        problem = self.ops.endpoint_problem(self.pane.profile.currentText())
        self.pane.show_endpoint_problem(problem or "")
        return problem

    def _start_run(self, ref: NeuronRef, operation: Operation[Any]) -> None:
        self._run_serial += 1
        serial = self._run_serial

        def current() -> bool:
            return serial == self._run_serial

        self.confirmation = None
        self.pane.set_busy(True)
        self.window.statusBar().showMessage("Explaining and scoring…")
        operation.estimate(_while(current, self.pane.show_estimate))
        operation.progress(_while(current, self.pane.set_progress))
        operation.finished(lambda: self._run_ended(ref, serial))
        operation.success(lambda _: self._run_succeeded()).failure(self._run_failed).run()

    def _run_ended(self, ref: NeuronRef, serial: int) -> None:
        if serial != self._run_serial:  # a later run took over
            return
        self.pane.set_busy(False)
        if self.browser.current == ref and self.browser.data is not None:
            self.pane.set_entries(self.browser.listed_explanations())

    def _run_succeeded(self) -> None:
        self.window.statusBar().showMessage("Scoring finished; results are stored", 5000)
        self.succeeded.emit()
        self.finished.emit("done")

    def _run_failed(self, error: Exception) -> None:
        message = error_message(error)
        self.pane.show_error(message)
        self.finished.emit(message)
        self.window.statusBar().showMessage(message, 15000)

    def cancel(self) -> None:
        """Stop the running generation or scoring (requests in flight are cancelled)."""
        if self.ops.cancel(Operations.RUN_TASK):
            self.pane.set_busy(False)
            self.window.statusBar().showMessage(
                "Cancelled; results finished before the cancel are stored", 5000
            )
            self.finished.emit("cancelled")
