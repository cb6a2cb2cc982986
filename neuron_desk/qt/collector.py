"""The memory work of a neuron switch, kept until its paint: garbage collection and freeing the
neuron shown before.

A switch allocates some 10^5 containers (the neuron's records, the panes' rows and layouts).
Left alone, Python's cyclic collector, which runs on allocation counts, traverses them again
and again while the panes fill, and every tenth young collection also everything the window
keeps: measured on the GPT-2 XL switch, ~5 ms of CPU per switch on average and single pauses
up to 80 ms, in the middle of the frame; and letting go of the neuron shown before (tens of
thousands of objects) took 1-2 ms of it. Instead:

- once the window and the LLM runner are built, what is alive then is frozen (`gc.freeze`):
  modules, Qt's wrappers, the window. It lives as long as the app and is never traversed again;
- from a pick until that neuron is painted (or has failed), automatic collection waits and the
  neuron shown before is kept (`release_after_paint`): both go on once the window has painted
  the new neuron (the window's next update after `neuron_shown`), before the next input is
  handled; if a pick never ends (a slow network) or nothing is painted, after `MAX_PAUSE_S`.

Nothing is left uncollected: the pause only moves the work that falls due during a switch to
just after it.
"""

from __future__ import annotations

import gc

from PySide6 import QtCore, QtWidgets

MAX_PAUSE_S = 1.0
"""The longest automatic collection waits for a switch to end."""


class SwitchCollector(QtCore.QObject):
    """Pauses automatic collection and keeps what `release_after_paint` is given from `pause()`
    (a pick) until the window has painted what `shown()` announced, or `resume()` (a failure),
    or `MAX_PAUSE_S`."""

    def __init__(self, window: QtWidgets.QWidget) -> None:
        super().__init__(window)
        self._paused = False
        self._awaiting_paint = False
        self._kept: list[object] = []
        self._limit = QtCore.QTimer(self)
        self._limit.setSingleShot(True)
        self._limit.timeout.connect(self.resume)
        window.installEventFilter(self)

    @property
    def paused(self) -> bool:
        """Whether automatic collection is waiting for a switch to end."""
        return self._paused

    def pause(self, *_: object) -> None:
        """A switch starts: automatic collection waits (if it is on at all)."""
        if not self._paused and gc.isenabled():
            gc.disable()
            self._paused = True
        self._awaiting_paint = False
        self._limit.start(int(MAX_PAUSE_S * 1000))

    def release_after_paint(self, value: object) -> None:
        """Let go of `value` (the neuron shown before) only once this switch is painted."""
        self._kept.append(value)

    def shown(self, *_: object) -> None:
        """The neuron is in the panes: the work goes on once the window has painted it."""
        self._awaiting_paint = True

    def resume(self, *_: object) -> None:
        """The switch ended: what was kept is let go of, and automatic collection goes on with
        whatever fell due meanwhile."""
        self._limit.stop()
        self._awaiting_paint = False
        self._kept.clear()
        if self._paused:
            self._paused = False
            gc.enable()

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        """The window's update after `shown()` paints the neuron: resume right after it."""
        if self._awaiting_paint and event.type() == QtCore.QEvent.Type.UpdateRequest:
            self._awaiting_paint = False
            QtCore.QTimer.singleShot(0, self.resume)
        return False

    @staticmethod
    def freeze_long_lived() -> None:
        """Collect once, then freeze everything alive: it lives as long as the app."""
        gc.collect()
        gc.freeze()
