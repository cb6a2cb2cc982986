"""The one place where asyncio meets Qt.

The app runs one asyncio event loop driven by Qt's (qasync), so coroutines run on the Qt
thread. `TaskSlots` keeps named tasks (FeelUOwn's preemptive task specs): a new task under a
name cancels its predecessor (switching neurons cancels the stale load), and everything is
cancelled and awaited on quit while the loop still runs. Task names are constants of the object
that starts them (`BrowserState.LOAD_TASK = "browser.load"`, `Operations.RUN_TASK = "ops.run"`),
so several owners share one `TaskSlots` without clashing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

os.environ.setdefault("QT_API", "pyside6")  # before qasync: it picks the binding on import

import qasync
from PySide6 import QtWidgets

from neuron_desk.core.errors import NeuronDeskError

logger = logging.getLogger(__name__)


class QtLoop(qasync.QEventLoop):  # type: ignore[misc]
    """qasync's loop, with the callbacks ready to run (`call_soon`: every task step, every
    future's wake-up) run in batches: one Qt timer for all of those queued, not one timer
    each (qasync starts, fires and kills a Qt timer per callback: a neuron switch made about
    a hundred). Delayed callbacks (`call_later`, `call_at`) are qasync's, as before."""

    def __init__(self, app: QtWidgets.QApplication) -> None:
        super().__init__(app)
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._run_scheduled = False

    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        if not callable(callback):
            raise TypeError(f"callback must be callable: {type(callback).__name__}")
        handle = asyncio.Handle(callback, args, self, context=context)
        self._ready.append(handle)
        if not self._run_scheduled:
            self._run_scheduled = True
            super().call_soon(self._run_ready)
        return handle

    def _run_ready(self) -> None:
        """Run the callbacks queued before this batch started (the ones they queue run in
        the next batch, after Qt's events: painting and input are not starved)."""
        self._run_scheduled = False
        ready = self._ready
        try:
            for _ in range(len(ready)):
                handle = ready.popleft()
                if not handle.cancelled():
                    handle._run()
        finally:  # (a KeyboardInterrupt or SystemExit out of a callback leaves the rest queued)
            if ready and not self._run_scheduled:
                self._run_scheduled = True
                super().call_soon(self._run_ready)


def run(app: QtWidgets.QApplication, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main()` on an asyncio loop driven by Qt's event loop; its result is the exit code."""
    with asyncio.Runner(loop_factory=lambda: QtLoop(app)) as runner:
        return runner.run(main())


def new_event_loop(app: QtWidgets.QApplication) -> asyncio.AbstractEventLoop:
    """A Qt-driven event loop (for tests that drive the app step by step)."""
    loop: asyncio.AbstractEventLoop = QtLoop(app)
    return loop


ErrorHandler = Callable[[str, BaseException], None]


def error_message(error: BaseException) -> str:
    """A failed task's error for the user: our own errors say it all, others name their type."""
    if isinstance(error, NeuronDeskError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def log_error(name: str, error: BaseException) -> None:
    """The default error handler: log the failed task's error."""
    logger.error("task %s failed: %s", name, error, exc_info=error)


class TaskSlots:
    """Named tasks, at most one running per name; errors go to `on_error` (or the handler
    given to `start`)."""

    def __init__(self, on_error: ErrorHandler = log_error) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._on_error = on_error
        self._handlers: dict[asyncio.Task[Any], ErrorHandler] = {}

    def start(
        self,
        name: str,
        coroutine: Coroutine[Any, Any, Any],
        on_error: ErrorHandler | None = None,
    ) -> asyncio.Task[Any]:
        """Run `coroutine` as the task called `name`, cancelling the one running before."""
        self.cancel(name)
        task = asyncio.ensure_future(coroutine)
        self._tasks[name] = task
        if on_error is not None:
            self._handlers[task] = on_error
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
        handler = self._handlers.pop(task, self._on_error)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            handler(name, error)
