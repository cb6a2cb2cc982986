"""The cyclic garbage collector waits during a neuron switch (from the pick until the window
has painted the neuron, or the pick failed) and runs again right after; a real window,
offscreen, over the mirror."""

from __future__ import annotations

import asyncio
import gc

import pytest

from neuron_desk.core.refs import NeuronRef
from neuron_desk.qt import collector as collector_module
from tests.qt.conftest import WindowFactory, run_until


def test_collection_waits_from_the_pick_until_the_neuron_is_painted(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop
) -> None:
    window = make_window()
    seen: dict[str, bool] = {}
    window.browser.loading.connect(lambda _ref: seen.setdefault("picked", gc.isenabled()))
    window.neuron_shown.connect(lambda _ref: seen.setdefault("shown", gc.isenabled()))
    assert gc.isenabled()
    window.browser.go_to(NeuronRef("mirror", 0, 1))
    assert not gc.isenabled() and window.collector.paused  # loading
    run_until(loop, lambda: "shown" in seen)
    assert seen == {"picked": False, "shown": False}  # still waiting at `neuron_shown`
    run_until(loop, gc.isenabled, timeout=2.0)  # on again once the window has painted it
    assert not window.collector.paused


def test_a_switch_that_never_ends_lets_collection_go_on_after_the_limit(
    make_window: WindowFactory, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = make_window()
    monkeypatch.setattr(collector_module, "MAX_PAUSE_S", 0.05)
    window.collector.pause()
    assert not gc.isenabled()
    loop.run_until_complete(asyncio.sleep(0.2))
    assert gc.isenabled()


def test_closing_in_the_middle_of_a_switch_leaves_collection_on(make_window: WindowFactory) -> None:
    window = make_window()
    window.browser.go_to(NeuronRef("mirror", 0, 2))
    assert not gc.isenabled()
    window.close()
    assert gc.isenabled()


def test_collection_that_is_off_stays_off(make_window: WindowFactory) -> None:
    window = make_window()
    gc.disable()
    try:
        window.collector.pause()
        window.collector.resume()
        assert not gc.isenabled()  # someone else turned it off: not ours to turn on
    finally:
        gc.enable()


def test_what_lives_as_long_as_the_app_is_frozen_out_of_collection(
    make_window: WindowFactory,
) -> None:
    window = make_window()
    before = gc.get_freeze_count()
    try:
        window.collector.freeze_long_lived()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
