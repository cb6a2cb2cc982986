"""A neuron switch within a frame, part two (issue 12): the objects made at the start are
frozen out of the collector's way once the runner is started, as the app does."""

from __future__ import annotations

import asyncio
import gc
import weakref

from neuron_desk.qt.app import start_runner_when_shown
from tests.qt.conftest import WindowFactory, run_until
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


def test_the_neuron_shown_before_is_freed_after_the_next_is_painted(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop
) -> None:
    window = make_window()
    window.browser.go_to(ref(0, 1))
    run_until(loop, lambda: window.browser.data is not None)
    before = weakref.ref(window.browser.data)
    alive_when_shown: list[bool] = []
    window.neuron_shown.connect(lambda _ref: alive_when_shown.append(before() is not None))
    window.browser.go_to(ref(0, 2))
    run_until(loop, lambda: bool(alive_when_shown))
    assert alive_when_shown == [True]  # not freed inside the switch...
    loop.run_until_complete(asyncio.sleep(0.05))
    gc.collect()
    assert before() is None  # ...but right after it
