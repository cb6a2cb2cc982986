"""Asking before a run sends anything billable: the policy (from the app's settings), the
confirmation dialog (opened with `open()`, never `exec()`), and the Settings page of the
threshold below which the app does not ask."""

from __future__ import annotations

import math

from PySide6 import QtCore, QtWidgets

from neuron_desk.llm.profiles import Profile
from neuron_desk.runs.estimate import RunEstimate

Qt = QtCore.Qt

ASK_BELOW_USD_KEY = "runs/dont_ask_below_usd"
"""Runs whose estimated cost is known and below this many dollars start without asking."""
ASK_UNPRICED_KEY = "runs/ask_unpriced"
"""Whether runs with no price known (self-hosted endpoints, unpriced models) ask first."""


def ask_below(settings: QtCore.QSettings) -> float:
    """The threshold in dollars (0: always ask)."""
    try:
        return max(0.0, float(settings.value(ASK_BELOW_USD_KEY, 0.0) or 0.0))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def ask_unpriced(settings: QtCore.QSettings) -> bool:
    """Whether unpriced runs ask first (the default: yes)."""
    return settings.value(ASK_UNPRICED_KEY, True) not in (False, "false")


def to_send(estimate: RunEstimate) -> int:
    """Requests the run would send (the cached ones cost nothing)."""
    return max(0, estimate.requests - estimate.cached_requests)


def needs_confirmation(
    estimate: RunEstimate, profile: Profile, settings: QtCore.QSettings
) -> bool:
    """Whether to ask before this run: it sends requests to a billable endpoint and its cost
    is not known to be below the threshold."""
    if to_send(estimate) == 0 or profile.is_local:  # nothing to send, or nothing billed
        return False
    if estimate.cost is None:
        return ask_unpriced(settings)
    return not estimate.cost < ask_below(settings)


def summary(estimate: RunEstimate, profile: Profile) -> str:
    """Requests, tokens and cost, for the confirmation."""
    cost = (
        f"at most ${estimate.cost:.4f}"
        if estimate.cost is not None
        else "unknown (no price is configured for this model)"
    )
    return (
        f"This run sends {to_send(estimate)} request(s) to {profile.base_url} "
        f"({estimate.cached_requests} more are answered from the cache).\n"
        f"Prompt tokens: about {estimate.prompt_tokens:,}; completion tokens: at most "
        f"{estimate.max_completion_tokens:,}.\nCost: {cost}."
    )


class RunConfirmation(QtWidgets.QDialog):
    """Send or cancel; "don't ask again below" updates the threshold in the settings."""

    def __init__(
        self,
        parent: QtWidgets.QWidget,
        estimate: RunEstimate,
        profile: Profile,
        settings: QtCore.QSettings,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send this run?")
        self.setObjectName("RunConfirmation")
        self.settings = settings
        self.estimate = estimate
        text = QtWidgets.QLabel(summary(estimate, profile), self)
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setWordWrap(True)
        self.text = text
        if estimate.cost is not None:
            above = max(0.01, math.ceil(estimate.cost * 200) / 100)  # twice this run, rounded up
            self.dont_ask = QtWidgets.QCheckBox(
                f"Don't ask again for runs below ${above:.2f} (Settings → Runs)", self
            )
            self._threshold: float | None = above
        else:
            self.dont_ask = QtWidgets.QCheckBox(
                "Don't ask again for runs with no known price (Settings → Runs)", self
            )
            self._threshold = None
        buttons = QtWidgets.QDialogButtonBox(self)
        self.send_button = buttons.addButton(
            f"Send {to_send(estimate)} request(s)", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.cancel_button = buttons.addButton(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(self.dont_ask)
        layout.addWidget(buttons)

    def accept(self) -> None:
        if self.dont_ask.isChecked():
            if self._threshold is None:
                self.settings.setValue(ASK_UNPRICED_KEY, False)
            else:
                self.settings.setValue(ASK_BELOW_USD_KEY, self._threshold)
        super().accept()


class RunsPage(QtWidgets.QWidget):
    """Settings → Runs: when the app asks before sending a run."""

    def __init__(self, settings: QtCore.QSettings) -> None:
        super().__init__()
        self.settings = settings
        self.below = QtWidgets.QDoubleSpinBox(self)
        self.below.setRange(0, 10_000)
        self.below.setDecimals(2)
        self.below.setPrefix("$")
        self.below.setSpecialValueText("always ask")
        self.below.setValue(ask_below(settings))
        self.below.setAccessibleName("Don't ask again below")
        self.below.valueChanged.connect(lambda v: settings.setValue(ASK_BELOW_USD_KEY, v))
        self.unpriced = QtWidgets.QCheckBox("Ask before runs with no known price", self)
        self.unpriced.setChecked(ask_unpriced(settings))
        self.unpriced.toggled.connect(lambda on: settings.setValue(ASK_UNPRICED_KEY, on))
        form = QtWidgets.QFormLayout(self)
        note = QtWidgets.QLabel(
            "Generate & score and Score it show the estimate (requests, tokens, cost) and ask "
            "before sending anything to a billable endpoint. The local model never asks.",
            self,
        )
        note.setWordWrap(True)
        form.addRow(note)
        form.addRow("Don't ask again below", self.below)
        form.addRow("", self.unpriced)
