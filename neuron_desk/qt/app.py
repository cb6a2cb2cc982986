"""Starting and stopping the desktop app."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.paths import Paths
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import ProfileConfig
from neuron_desk.qt import asyncbridge, preflight
from neuron_desk.qt.browser import BrowserState
from neuron_desk.qt.mainwindow import MainWindow
from neuron_desk.qt.welcome import SEEN_KEY

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


def open_settings(paths: Paths) -> QtCore.QSettings:
    """The app's window settings (an INI file in the data directory)."""
    return QtCore.QSettings(str(paths.settings), QtCore.QSettings.Format.IniFormat)


def open_desk(paths: Paths | None = None) -> tuple[Desk, QtCore.QSettings]:
    """The user's desk (offline as when last closed) and the app's settings."""
    paths = paths or Paths.from_env()
    settings = open_settings(paths)
    desk = Desk.open(paths, offline=BrowserState.saved_offline(settings))
    return desk, settings


async def check_profiles(desk: Desk) -> None:
    """Fall back to the built-in profiles (logged) when the profiles file can't be read."""
    try:
        desk.profiles  # noqa: B018 - reads the file
    except NeuronDeskError as exc:
        logger.error("%s; using the built-in profiles", exc)
        await desk.use_profiles(ProfileConfig(path=desk.paths.profiles))


def build_window(desk: Desk, settings: QtCore.QSettings) -> MainWindow:
    """The main window over a desk, before it is shown."""
    return MainWindow(desk, settings)


def open_first_neuron(window: MainWindow) -> None:
    """The last neuron shown, else the default dataset's first interesting or available one."""
    window.browser.go_to(window.browser.first_neuron())


async def close_window(window: MainWindow) -> None:
    """Cancel and await every task, then close the desk's clients and backends (the loop still
    running; the store stays open for the caller to close)."""
    await window.tasks.close()
    await window.desk.aclose()


def run_app(screenshot: str | None = None) -> int:
    """Run the app until its window closes; the exit code.

    With `screenshot`, the window is saved to that PNG file once the first neuron is shown,
    and the app quits (a smoke test for installs and bundles). Without a display, or with a
    system library of Qt's X11 plugin missing, it says so in one line and returns 1.
    """
    problem = preflight.problem()
    if problem is not None:
        print(f"neuron-desk: {problem}", file=sys.stderr)
        return 1
    app = make_application()
    try:
        desk, settings = open_desk()
    except NeuronDeskError as exc:
        QtWidgets.QMessageBox.critical(
            None, "neuron-desk", f"The store could not be opened:\n{exc}"
        )
        return 1

    async def main() -> int:
        await check_profiles(desk)
        window = build_window(desk, settings)
        window.restore_state()  # or fitted to the screen, its docks tabbed where needed
        window.show()
        closed = asyncio.Event()
        if screenshot:
            window.neuron_shown.connect(lambda *_: _save_and_close(window, screenshot))
        open_first_neuron(window)
        if not settings.value(SEEN_KEY):
            window.show_welcome()  # first start
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
        desk.close()


def _save_and_close(window: MainWindow, path: str) -> None:
    window.repaint()
    if not window.grab().save(path):
        logger.error("could not save the screenshot to %s", path)
    window.close()


def app_icon() -> QtGui.QIcon:
    """The application icon from the package resources (empty if missing)."""
    import neuron_desk.resources as resources

    path = resources.icon_path()
    return QtGui.QIcon(str(path)) if path is not None else QtGui.QIcon()
