"""First start: the welcome page opens a neuron with one click and writes a profile from a
preset; with no endpoint the app says so and points to Settings; the Help menu."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import ProfileConfig
from neuron_desk.qt.helpmenu import CREDITS, shortcuts
from neuron_desk.qt.mainwindow import MainWindow
from neuron_desk.qt.welcome import PRESETS, SEEN_KEY
from tests.qt.conftest import WindowFactory, run_until
from tests.qt.test_sparse import sample_window  # noqa: F401 - a fixture


def test_welcome_opens_a_neuron_with_one_click(sample_window: MainWindow, loop) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    window = sample_window
    window.show_welcome()
    assert window.pages.currentWidget() is window.welcome
    assert not window.tokens_dock.isVisible()  # the page gets the whole window
    welcome = window.welcome
    labels = " ".join(label.text() for label in welcome.findChildren(QtWidgets.QLabel))
    assert "Browse the neurons" in labels and "score" in labels  # what the app does
    first = window.desk.registry.default().interesting[0]
    button = welcome.neuron_buttons[0]
    assert button.text().startswith(f"{first.layer}:{first.neuron}")
    button.click()
    ref = NeuronRef("smollm2-135m", first.layer, first.neuron)
    run_until(loop, lambda: window.browser.current == ref and window.browser.data is not None)
    assert window.pages.currentWidget() is window.browser_page
    assert window.tokens_dock.isVisible()
    assert window.settings.value(SEEN_KEY) in (True, "true")


def test_a_preset_writes_a_profile_and_becomes_the_default(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    window = make_window(ProfileConfig(path=tmp_path / "profiles.json"))
    window.show_welcome()
    welcome = window.welcome
    assert [p.title for p in PRESETS] == [
        "OpenAI",
        "OpenRouter",
        "vLLM",
        "Ollama",
        "llama.cpp server",
        "Local model (SmolLM2-135M)",
    ]
    welcome.preset.setCurrentIndex([p.name for p in PRESETS].index("ollama"))
    assert welcome.base_url.text() == "http://127.0.0.1:11434/v1"
    welcome.model.setText("qwen2.5:7b")
    welcome.save_button.click()
    saved = json.loads((tmp_path / "profiles.json").read_text())
    assert saved["default"] == "ollama"
    (profile,) = [p for p in saved["profiles"] if p["name"] == "ollama"]
    assert profile["base_url"] == "http://127.0.0.1:11434/v1"
    assert profile["explainer_model"] == "qwen2.5:7b"
    run_until(loop, lambda: window.explanations.profile.currentText() == "ollama")
    assert "Saved the profile 'ollama'" in welcome.result.text()


def test_no_endpoint_points_to_settings_not_to_a_missing_local_model(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("NEURON_DESK_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    import neuron_desk.llm.local as local

    monkeypatch.setattr(local, "local_available", lambda: (False, "pip install ..."))
    window = make_window(ProfileConfig(path=tmp_path / "profiles.json"))
    window._profiles_changed()
    assert window.explanations.profile.currentText() == "local"
    problem = window.explanations.problem.text()
    assert "No LLM endpoint is set up" in problem and "Settings" in problem
    assert "--base-url" not in problem
    assert window.explanations.setup_button.isVisibleTo(window)
    ref = NeuronRef("mirror", 0, 2)
    window.browser.go_to(ref)
    run_until(loop, lambda: window.browser.data is not None)
    window.explanations.generate_button.click()
    assert "Settings" in window.statusBar().currentMessage()
    assert window.explanations.generate_button.isEnabled()
    window.explanations.setup_button.click()
    dialogs = [
        w for w in QtWidgets.QApplication.topLevelWidgets() if w.objectName() == "SettingsDialog"
    ]
    assert dialogs and dialogs[-1].isVisible()
    dialogs[-1].close()


def test_help_menu(make_window: WindowFactory) -> None:
    window = make_window()
    texts = [a.text().replace("&", "") for a in window.help_menu.actions() if a.text()]
    assert texts == ["Welcome page", "Keyboard shortcuts", "Short guide", "About neuron-desk"]
    keys = shortcuts(window.menuBar())
    assert ("Go", "Next neuron", "Ctrl+]") in keys and any(k[1] == "Generate & score" for k in keys)
    dialog = window.help_menu.show_shortcuts()
    text = dialog.findChild(QtWidgets.QPlainTextEdit).toPlainText()
    assert "Next neuron" in text and "Ctrl+C" in text
    dialog.close()
    about = window.help_menu.show_about()
    text = about.findChild(QtWidgets.QPlainTextEdit).toPlainText()
    assert "neuron-desk" in text and "PySide6" in text and "Python 3." in text
    assert "MIT" in text and "SmolLM2" in text and CREDITS in text
    about.close()
    guide = window.help_menu.show_guide()
    assert "Generate & score" in guide.findChild(QtWidgets.QPlainTextEdit).toPlainText()
    guide.close()


def test_closing_on_the_welcome_page_keeps_the_docks_for_the_next_start(
    qtbot, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The welcome page hides the docks; quitting there saves the window with them, so the
    next start (which opens on the welcome page again) brings them back with a neuron."""
    desk = Desk.open(Paths.at(tmp_path))
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    windows = []
    try:
        for start in range(2):
            window = MainWindow(desk, settings)
            windows.append(window)
            window.restore_state()
            window.resize(1200, 1000)
            window.show()
            window.show_welcome()
            assert not window.tokens_dock.isVisible()
            if start == 1:
                window.welcome.neuron_buttons[0].click()
                run_until(loop, lambda w=window: w.browser.data is not None)
                assert window.tokens_dock.isVisible() and window.related_dock.isVisible()
            loop.run_until_complete(window.tasks.close())
            window.close()
    finally:
        loop.run_until_complete(desk.aclose())
        for window in windows:
            window.deleteLater()
        QtWidgets.QApplication.processEvents()
        desk.close()


def test_the_welcome_page_follows_the_dataset_picked(
    sample_window: MainWindow,  # noqa: F811
) -> None:
    """Picking another dataset while the welcome page shows lists that dataset's interesting
    neurons (GPT-2 XL's from the paper), and back; each time the buttons come first, the
    random button after them, at the top of their box."""
    window = sample_window
    window.show_welcome()
    welcome = window.welcome
    box = window.picker.dataset_box
    for name in ("gpt2-xl", "smollm2-135m", "gpt2-xl"):
        box.setCurrentIndex(box.findData(name))
        QtWidgets.QApplication.processEvents()
        dataset = window.desk.dataset(name)
        first = dataset.interesting[0]
        assert welcome.neurons_box.title() == f"Open a {dataset.unit} of {dataset.title}"
        assert welcome.neuron_buttons[0].text().startswith(f"{first.layer}:{first.neuron}")
        layout = welcome.neurons_box.layout()
        items = [layout.itemAt(i) for i in range(layout.count())]
        widgets = [item.widget() for item in items]
        assert widgets[: len(welcome.neuron_buttons)] == welcome.neuron_buttons
        assert widgets[len(welcome.neuron_buttons)] is welcome.random_button
        assert len(items) == len(welcome.neuron_buttons) + 2  # and one stretch


def test_the_welcome_page_says_what_runs_use_once_a_preset_is_saved(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Its endpoint line said "No LLM endpoint is set up" after a preset was saved; it says
    what the new default needs (OpenAI: its key), and that it is ready once it is."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    window = make_window(ProfileConfig(path=tmp_path / "profiles.json"))
    window.show_welcome()
    welcome = window.welcome
    welcome.preset.setCurrentIndex([p.name for p in PRESETS].index("openai"))
    welcome.save_button.click()
    run_until(loop, lambda: "OPENAI_API_KEY" in welcome.status.text())
    assert "which is not set" in welcome.status.text()
    welcome.preset.setCurrentIndex([p.name for p in PRESETS].index("ollama"))
    welcome.save_button.click()
    run_until(loop, lambda: welcome.status.text() == "Runs use the profile 'ollama'; ready.")
