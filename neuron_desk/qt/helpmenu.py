"""The Help menu: the welcome page, keyboard shortcuts, a short guide, and About (versions,
data and licence credits). Its dialogs are plain text and opened with `open()`."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from importlib import metadata

import PySide6
from PySide6 import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

GUIDE = """\
The toolbar picks a dataset and a neuron (layer, neuron; Go). Back/Forward walk your history,
Random picks a neuron with data, Interesting lists notable neurons with what they fire on
(type to filter). In the bundled sample only some neurons have data: the number arrows, Next
(Ctrl+]) and Previous (Ctrl+[) move among them, and an empty neuron offers the nearest ones.

Explanations lists the neuron's explanations with their scores (published ones, yours and
generated ones). Generate & score asks the LLM endpoint for explanations and scores each by
simulation; Score it scores your own. Both show the estimate (requests, tokens, cost) and ask
before sending anything billable (Settings → Runs sets when not to ask).

Scoring details shows, for the selected explanation, each scored sequence: the real
activations in green and the simulation as a blue bar under each token, or side by side in
two aligned columns (real | simulated).

Activations shows the excerpts the neuron fires on, as in OpenAI's neuron-viewer: Top
activations, quantile samples and a random sample, coloured over all of them together. Click
a section title to show all of it. Hover a token for its value; select excerpts and press
Ctrl+C to copy them as plain text (the context menu also copies tokens with their values).

Docks (View menu): top tokens by activation and by weight, related neurons upstream and
downstream (click one to go there; ∅ marks neurons without data here), search results and the
explained neurons of a dataset. Drag a dock onto another to make tabs; the layout is kept.

Settings: LLM endpoint profiles (Test connection checks one in at most 15 s), data sources
and offline mode, the store's size, and when runs ask first.
"""

CREDITS = """\
Data and method: OpenAI's “Language models can explain neurons in language models” and its
code and datasets (github.com/openai/automated-interpretability, MIT licence): the GPT-2 XL
and GPT-2 small neuron datasets, the interesting-neuron list and the viewer's layout.

The bundled sample was built by neuron-desk from SmolLM2-135M-Instruct (Hugging Face,
Apache-2.0) over Python's documentation (PSF licence) and the King James Bible (public domain).

neuron-desk is free software under the MIT licence."""


def versions() -> str:
    """neuron-desk, Python, PySide6 and Qt versions, and the platform."""
    try:
        own = metadata.version("neuron-desk")
    except metadata.PackageNotFoundError:
        own = "unknown (not installed)"
    return (
        f"neuron-desk {own}\nPython {platform.python_version()} ({sys.platform})\n"
        f"PySide6 {PySide6.__version__}, Qt {QtCore.qVersion()}"
    )


def shortcuts(menu_bar: QtWidgets.QMenuBar) -> list[tuple[str, str, str]]:
    """(menu, action, keys) of every menu action that has a shortcut."""
    rows = []
    for top in menu_bar.actions():
        menu = top.menu()
        if not isinstance(menu, QtWidgets.QMenu):
            continue
        for action in menu.actions():
            keys = action.shortcut().toString(QtGui.QKeySequence.SequenceFormat.NativeText)
            if keys:
                rows.append((_plain(top.text()), _plain(action.text()), keys))
    return rows


def _plain(label: str) -> str:
    """A menu label without its mnemonic marks ("&&" is a literal "&")."""
    return label.replace("&&", "\0").replace("&", "").replace("\0", "&")


def _text_dialog(parent: QtWidgets.QWidget, title: str, text: str) -> QtWidgets.QDialog:
    dialog = QtWidgets.QDialog(parent)
    dialog.setWindowTitle(title)
    view = QtWidgets.QPlainTextEdit(dialog)
    view.setPlainText(text)
    view.setReadOnly(True)
    buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close, dialog)
    buttons.rejected.connect(dialog.reject)
    layout = QtWidgets.QVBoxLayout(dialog)
    layout.addWidget(view)
    layout.addWidget(buttons)
    dialog.resize(640, 460)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog


class HelpMenu(QtWidgets.QMenu):
    """Help: Welcome, Keyboard shortcuts, Short guide, About."""

    def __init__(self, window: QtWidgets.QMainWindow, show_welcome: Callable[[], None]) -> None:
        super().__init__("&Help", window)
        self.window_ = window
        self.addAction("&Welcome page", show_welcome)
        self.addAction("&Keyboard shortcuts", self.show_shortcuts, "Ctrl+/")
        self.addAction("Short &guide", self.show_guide, QtGui.QKeySequence.StandardKey.HelpContents)
        self.addSeparator()
        self.addAction("&About neuron-desk", self.show_about)

    def show_shortcuts(self) -> QtWidgets.QDialog:
        """Every menu shortcut, and the keys of the panes."""
        rows = shortcuts(self.window_.menuBar())
        width = max((len(f"{m} → {a}") for m, a, _ in rows), default=20)
        lines = [f"{f'{m} → {a}':<{width}}  {k}" for m, a, k in rows]
        lines += [
            "",
            f"{'Excerpts → copy the selected as text':<{width}}  Ctrl+C",
            f"{'Neuron number → next/previous with data':<{width}}  Up / Down",
        ]
        return _text_dialog(self.window_, "Keyboard shortcuts", "\n".join(lines))

    def show_guide(self) -> QtWidgets.QDialog:
        """A short guide to the panes."""
        return _text_dialog(self.window_, "Short guide", GUIDE)

    def show_about(self) -> QtWidgets.QDialog:
        """Versions, and the data and licence credits."""
        return _text_dialog(self.window_, "About neuron-desk", f"{versions()}\n\n{CREDITS}")
