"""A neuron switch within a frame, part two (issue 12): the neuron shown before is freed after
the next one is painted, not inside its switch."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tests.qt.conftest import WindowFactory, run_until
from tests.qt.test_browser import ref


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
