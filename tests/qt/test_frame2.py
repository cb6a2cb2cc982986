"""A neuron switch within a frame, part two (issue 12): the objects made at the start are
frozen out of the collector's way once the runner is started, as the app does."""

from __future__ import annotations

import asyncio
import gc

from neuron_desk.qt.app import start_runner_when_shown
from tests.qt.conftest import WindowFactory
from tests.qt.test_browser import ref


def test_the_start_objects_are_frozen_once_the_runner_is_started(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop
) -> None:
    window = make_window()
    made_at_start = [window]  # a container the collector tracks
    try:
        window.browser.go_to(ref(0, 1))
        loop.run_until_complete(asyncio.wait_for(start_runner_when_shown(window), 10))
        assert window._runs is not None  # the runner was started first
        assert gc.get_freeze_count() > 0
        assert not any(o is made_at_start for o in gc.get_objects())  # no longer walked
        later: list[object] = []
        later.append(later)  # garbage made after the start is still collected
        del later
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
