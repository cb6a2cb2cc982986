"""The one place where asyncio meets Qt.

The app runs one asyncio event loop driven by Qt's (qasync), so coroutines run on the Qt
thread: they may update widgets directly once they resume. `TaskSlots` keeps named tasks: a
new task under a name cancels its predecessor (switching neurons cancels the stale load), and
everything is cancelled and awaited on quit while the loop still runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

os.environ.setdefault("QT_API", "pyside6")  # before qasync: it picks the binding on import

import qasync
from PySide6 import QtWidgets

logger = logging.getLogger(__name__)


def run(app: QtWidgets.QApplication, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main()` on an asyncio loop driven by Qt's event loop; its result is the exit code."""
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        return runner.run(main())


def new_event_loop(app: QtWidgets.QApplication) -> asyncio.AbstractEventLoop:
    """A Qt-driven event loop (for tests that drive the app step by step)."""
    loop: asyncio.AbstractEventLoop = qasync.QEventLoop(app)
    return loop


class TaskSlots:
    """Named tasks, at most one running per name; errors go to `on_error`."""

    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._on_error = on_error

    def start(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` as the task called `name`, cancelling the one running before."""
        self.cancel(name)
        task = asyncio.ensure_future(coroutine)
        self._tasks[name] = task
        task.add_done_callback(self._on_done(name))
        return task

    def running(self, name: str) -> bool:
        """Whether a task of that name is still running."""
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def cancel(self, name: str) -> bool:
        """Cancel the task called `name`; True if one was running."""
        task = self._tasks.pop(name, None)
        if task is not None and not task.done():
            task.cancel()
            return True
        return False

    async def close(self) -> None:
        """Cancel every task and wait until they have all ended."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_done(self, name: str) -> Callable[[asyncio.Task[Any]], None]:
        return lambda task: self._finished(name, task)

    def _finished(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._on_error(name, error)
