"""Starting and stopping the desktop app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.paths import Paths
from neuron_desk.desk import Desk
from neuron_desk.qt import asyncbridge, preflight
from neuron_desk.qt.browser import WELCOME_SEEN_KEY, BrowserState
from neuron_desk.qt.mainwindow import MainWindow

logger = logging.getLogger(__name__)

APP_ID = "io.github.neuron_desk.NeuronDesk"

RUNNER_AFTER_S = 5.0
"""The LLM runner starts once the first neuron is shown, or after this long at the latest."""


NO_FILL_THREADS = ("QT_NO_GUI_THREADPOOL", "1")
"""Qt's raster engine splits every fill taller than ~96 lines (a scroll bar's groove, a
table's background) over a thread pool and waits for it: for widgets that is thread wake-ups
and waits costing more than the fill (a full repaint of the 1920×1080 window: 12 ms of CPU
with the pool, under 4 ms without; docs/notes/frame.md). Qt reads it when the pool is first
asked for, so it is set before the application exists (a value set already is kept)."""


def make_application(argv: list[str] | None = None) -> QtWidgets.QApplication:
    """The QApplication (created once), with names, style and a theme that follows the system."""
    existing = QtWidgets.QApplication.instance()
    if isinstance(existing, QtWidgets.QApplication):
        return existing
    os.environ.setdefault(*NO_FILL_THREADS)
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
        from neuron_desk.llm.profiles import ProfileConfig

        logger.error("%s; using the built-in profiles", exc)
        await desk.use_profiles(ProfileConfig(path=desk.paths.profiles))


def build_window(desk: Desk, settings: QtCore.QSettings) -> MainWindow:
    """The main window over a desk, before it is shown."""
    return MainWindow(desk, settings)


def open_first_neuron(window: MainWindow) -> None:
    """The last neuron shown, else the default dataset's first interesting or available one."""
    window.browser.go_to(window.browser.first_neuron())


async def start_runner_when_shown(window: MainWindow) -> None:
    """Once the first neuron is painted (or it failed, or a while passed): read the profiles
    (falling back to the built-in ones) and start the window's LLM runner. Until then nothing
    of the LLM stack is loaded, so the first neuron appears sooner."""
    shown = asyncio.Event()
    window.neuron_shown.connect(lambda *_: shown.set())
    window.browser.failed.connect(lambda *_: shown.set())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(shown.wait(), RUNNER_AFTER_S)
    await asyncio.sleep(0.05)  # Qt paints the panes first
    await check_profiles(window.desk)
    window.start_runner()
    window.collector.freeze_long_lived()  # the window and the LLM stack: alive until the end


async def open_window(
    desk: Desk,
    settings: QtCore.QSettings,
    on_shown: Callable[[MainWindow], object] | None = None,
) -> tuple[MainWindow, asyncio.Future[None]]:
    """Build and show the window, open the first neuron (`on_shown(window)` each time a
    neuron is shown) and the welcome page on a first start; the task that starts the LLM
    runner after that."""
    window = build_window(desk, settings)
    window.restore_state()  # or fitted to the screen, its docks tabbed where needed
    window.show()
    if on_shown is not None:
        window.neuron_shown.connect(lambda _ref: on_shown(window))
    runner = asyncio.ensure_future(start_runner_when_shown(window))
    open_first_neuron(window)
    if not settings.value(WELCOME_SEEN_KEY):
        await check_profiles(desk)
        window.show_welcome()  # first start
    return window, runner


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
        shown = (lambda shown: _save_and_close(shown, screenshot)) if screenshot else None
        window, runner = await open_window(desk, settings, shown)
        closed = asyncio.Event()
        window.destroyed.connect(closed.set)
        app.lastWindowClosed.connect(closed.set)
        for signum in (signal.SIGTERM, signal.SIGINT):  # quit cleanly: tasks, clients, store
            signal.signal(signum, lambda *_: window.close())
        heartbeat = QtCore.QTimer()  # lets Python run its signal handlers inside Qt's loop
        heartbeat.timeout.connect(lambda: None)
        heartbeat.start(250)
        await closed.wait()
        heartbeat.stop()
        runner.cancel()
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
