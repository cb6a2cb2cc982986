"""Starting and stopping the desktop app."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.paths import data_dir, store_path
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.qt import asyncbridge
from neuron_desk.qt.mainwindow import MainWindow, Runner

logger = logging.getLogger(__name__)

APP_ID = "io.github.neuron_desk.NeuronDesk"


def make_application(argv: list[str] | None = None) -> QtWidgets.QApplication:
    """The QApplication (created once), with names, style and a theme that follows the system."""
    existing = QtWidgets.QApplication.instance()
    if isinstance(existing, QtWidgets.QApplication):
        return existing
    app = QtWidgets.QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("neuron-desk")
    app.setOrganizationName("neuron-desk")
    app.setApplicationDisplayName("neuron-desk")
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())
    app.setStyle("Fusion")  # follows the system's light/dark colour scheme in Qt 6.5+
    app.setQuitOnLastWindowClosed(False)  # the async main decides when to stop
    return app


def make_runner(store: Store) -> Runner | None:
    """The LLM runner for the app, or None when no endpoint library is usable."""
    try:
        from neuron_desk.qt.runner import LLMRunner
    except ImportError as exc:  # pragma: no cover - a broken install
        logger.warning("LLM features unavailable: %s", exc)
        return None
    runner: Runner = LLMRunner(store)
    return runner


def build_window(store: Store, settings: QtCore.QSettings) -> MainWindow:
    """The main window over the user's store, before it is shown."""
    registry = Registry(store)
    offline = settings.value("offline", False) in (True, "true")
    service = NeuronService(registry, store, offline=offline)
    return MainWindow(registry, store, service, make_runner(store), settings)


def open_first_neuron(window: MainWindow) -> None:
    """The last neuron shown, else the default dataset's first interesting or available one."""
    last = window.last_neuron()
    if last is not None:
        window.go_to(*last)
        return
    dataset = window.registry.default()
    if dataset.interesting:
        first = dataset.interesting[0]
        window.go_to(dataset.name, first.layer, first.neuron)
        return
    available = window.service.available_neurons(dataset.name)
    layer, neuron = available[0] if available else (0, 0)
    window.go_to(dataset.name, layer, neuron)


async def close_window(window: MainWindow) -> None:
    """Cancel and await every task, then close the service and the runner (loop still running)."""
    await window.tasks.close()
    await window.service.aclose()
    if window.runner is not None:
        await window.runner.aclose()


def run_app(screenshot: str | None = None) -> int:
    """Run the app until its window closes; the exit code.

    With `screenshot`, the window is saved to that PNG file once the first neuron is shown,
    and the app quits (a smoke test for installs and bundles).
    """
    app = make_application()
    try:
        store = Store.open(store_path())
    except NeuronDeskError as exc:
        QtWidgets.QMessageBox.critical(
            None, "neuron-desk", f"The store could not be opened:\n{exc}"
        )
        return 1
    settings = QtCore.QSettings(str(data_dir() / "settings.ini"), QtCore.QSettings.Format.IniFormat)

    async def main() -> int:
        window = build_window(store, settings)
        window.restore_state()
        window.resize(window.size().expandedTo(QtCore.QSize(1200, 800)))
        window.show()
        closed = asyncio.Event()
        if screenshot:
            window.neuron_shown.connect(lambda *_: _save_and_close(window, screenshot))
        open_first_neuron(window)
        window.destroyed.connect(closed.set)
        app.lastWindowClosed.connect(closed.set)
        for signum in (signal.SIGTERM, signal.SIGINT):  # quit cleanly: tasks, clients, store
            signal.signal(signum, lambda *_: window.close())
        heartbeat = QtCore.QTimer()  # lets Python run its signal handlers inside Qt's loop
        heartbeat.timeout.connect(lambda: None)
        heartbeat.start(250)
        await closed.wait()
        heartbeat.stop()
        await close_window(window)
        return 0

    try:
        return asyncbridge.run(app, main)
    finally:
        store.close()


def _save_and_close(window: MainWindow, path: str) -> None:
    window.repaint()
    if not window.grab().save(path):
        logger.error("could not save the screenshot to %s", path)
    window.close()


def app_icon() -> QtGui.QIcon:
    """The application icon from the package resources (empty if missing)."""
    from importlib import resources

    path = resources.files("neuron_desk").joinpath("resources", "icons", "neuron-desk.svg")
    return QtGui.QIcon(str(path)) if path.is_file() else QtGui.QIcon()
