"""The browser state without any window: a real desk over the mirror on 127.0.0.1 and a real
SQLite store; history, the last pick winning, stepping and random picks staying in range,
offline mode, the last neuron kept in the settings, and the related neurons' fill-in."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtCore

from neuron_desk.core import codec
from neuron_desk.core.model import NeuronConnections, RelatedNeurons
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from neuron_desk.qt.browser import NOT_EXPLAINED, BrowserState, History
from tests.data.mirror import Mirror
from tests.qt.conftest import DeskFactory, run_until


def ref(layer: int, index: int) -> NeuronRef:
    return NeuronRef("mirror", layer, index)


class Events:
    """Everything a browser announced, in order."""

    def __init__(self, browser: BrowserState) -> None:
        self.log: list[tuple[str, Any]] = []
        browser.loading.connect(lambda r: self.log.append(("loading", r)))
        browser.loaded.connect(lambda r, data: self.log.append(("loaded", (r, data))))
        browser.failed.connect(lambda r, message: self.log.append(("failed", (r, message))))
        browser.dataset_changed.connect(lambda d: self.log.append(("dataset", d.name)))
        browser.offline_changed.connect(lambda on: self.log.append(("offline", on)))
        browser.related_explained.connect(
            lambda r, text, score: self.log.append(("related", (r, text, score)))
        )

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.log if k == kind]


@pytest.fixture
def browser(
    make_desk: DeskFactory, settings: QtCore.QSettings, loop: asyncio.AbstractEventLoop
) -> Any:
    state = BrowserState(make_desk(), settings)
    state.set_dataset("mirror")
    yield state
    loop.run_until_complete(state.tasks.close())


def wait_loaded(loop: asyncio.AbstractEventLoop, browser: BrowserState, target: NeuronRef) -> None:
    run_until(loop, lambda: browser.current == target and browser.data is not None)


def test_loading_announces_then_fills_and_remembers_the_neuron(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, settings: QtCore.QSettings
) -> None:
    events = Events(browser)
    assert browser.go(0, 2)
    assert browser.current == ref(0, 2) and browser.data is None
    assert events.of("loading") == [ref(0, 2)]
    wait_loaded(loop, browser, ref(0, 2))
    ((loaded_ref, data),) = events.of("loaded")
    assert loaded_ref == ref(0, 2) and data is browser.data and data.ref == ref(0, 2)
    assert [e.explanation for e in browser.listed_explanations()] == [
        " words with the letter e (0:2)"
    ]
    # Kept in the settings shortly after the last pick (not at each pick).
    run_until(loop, lambda: settings.value(BrowserState.LAST_NEURON_KEY) is not None, timeout=5)
    assert NeuronRef.from_json(settings.value(BrowserState.LAST_NEURON_KEY)) == ref(0, 2)
    # A new browser over the same settings starts where this one was.
    again = BrowserState(browser.desk, settings)
    assert again.last_neuron() == ref(0, 2)
    assert again.first_neuron() == ref(0, 2)


def test_a_bad_or_missing_last_neuron_is_ignored(
    make_desk: DeskFactory, settings: QtCore.QSettings
) -> None:
    desk = make_desk()
    default = desk.registry.default()  # GPT-2 XL here: no bundled sample in these tests
    first = default.interesting[0]
    for value in (["mirror", 9, 0], ["nowhere", 0, 0], "garbage", None):
        settings.setValue(BrowserState.LAST_NEURON_KEY, value)
        state = BrowserState(desk, settings)
        assert state.last_neuron() is None
        assert state.first_neuron() == NeuronRef(default.name, first.layer, first.neuron)
    assert BrowserState(desk, None).last_neuron() is None


def test_a_pick_outside_the_dataset_changes_nothing(
    browser: BrowserState, loop: asyncio.AbstractEventLoop
) -> None:
    browser.go(0, 1)
    wait_loaded(loop, browser, ref(0, 1))
    events = Events(browser)
    assert not browser.go_to(ref(5, 0))
    assert not browser.go_to(NeuronRef("nowhere", 0, 0))
    (first, second) = events.of("failed")
    assert first[0] == ref(5, 0) and "no layer 5" in first[1]
    assert "nowhere" in second[1]
    assert events.of("loading") == []
    assert browser.current == ref(0, 1) and browser.data is not None
    assert browser.history.items == [ref(0, 1)]


def test_history_back_forward_and_branching(
    browser: BrowserState, loop: asyncio.AbstractEventLoop
) -> None:
    for n in (1, 2, 3):
        browser.go(0, n)
    assert browser.history.items == [ref(0, 1), ref(0, 2), ref(0, 3)]
    assert browser.back() and browser.current == ref(0, 2)
    assert browser.back() and browser.current == ref(0, 1)
    assert not browser.back() and browser.current == ref(0, 1)  # at the start
    assert browser.forward() and browser.current == ref(0, 2)
    browser.go(1, 0)  # a new branch drops the forward part
    assert browser.history.items == [ref(0, 1), ref(0, 2), ref(1, 0)]
    assert not browser.forward()
    browser.go(1, 0)  # the same neuron again is not a new entry
    browser.reload()  # nor is reloading
    assert browser.history.items == [ref(0, 1), ref(0, 2), ref(1, 0)]
    wait_loaded(loop, browser, ref(1, 0))


def test_history_alone() -> None:
    history = History()
    assert history.back() is None and history.forward() is None
    history.visit(ref(0, 1))
    history.visit(ref(0, 1))
    assert history.items == [ref(0, 1)] and history.position == 0


def test_the_last_pick_wins_and_stale_loads_are_cancelled(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, mirror: Mirror
) -> None:
    for n in range(1, 4):  # the first picks are the slowest to answer
        mirror.faults.delay_s[f"collated-activations/0/{n}.json"] = round(0.4 - 0.1 * n, 2)
    events = Events(browser)
    for n in range(1, 4):
        browser.go(0, n)
    wait_loaded(loop, browser, ref(0, 3))
    loop.run_until_complete(asyncio.sleep(0.5))  # a stale load, had one survived, ends here
    assert events.of("loading") == [ref(0, 1), ref(0, 2), ref(0, 3)]
    assert [r for r, _ in events.of("loaded")] == [ref(0, 3)]
    assert browser.data is not None and browser.data.ref == ref(0, 3)
    assert not browser.tasks.running(BrowserState.LOAD_TASK)


def test_step_wraps_around_and_stays_in_range(browser: BrowserState) -> None:
    assert not browser.next()  # nothing is current yet
    browser.go(0, 7)
    assert browser.next() and browser.current == ref(1, 0)  # the next layer's first
    browser.go(1, 7)
    assert browser.next() and browser.current == ref(0, 0)  # the dataset's end wraps
    assert browser.previous() and browser.current == ref(1, 7)
    assert browser.step(-17) and browser.current == ref(1, 6)  # 16 neurons in all
    for _ in range(40):
        browser.step(5)
        current = browser.current
        assert current is not None and 0 <= current.layer < 2 and 0 <= current.index < 8


def test_random_stays_in_range_and_offline_among_stored_neurons(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, store: Store
) -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(30):
        assert browser.random(rng)
        current = browser.current
        assert current is not None and current.dataset == "mirror"
        assert 0 <= current.layer < 2 and 0 <= current.index < 8
        seen.add(current)
    assert len(seen) > 5
    loop.run_until_complete(browser.tasks.close())
    events = Events(browser)
    browser.desk.offline = True
    store.clear_files("mirror")
    assert not browser.random(rng)
    assert events.of("failed") == [(None, "No neurons are available offline in this dataset")]
    browser.desk.offline = False
    browser.go(0, 4)
    wait_loaded(loop, browser, ref(0, 4))
    browser.desk.offline = True
    for _ in range(5):
        assert browser.random(rng) and browser.current == ref(0, 4)  # the only stored one


def test_offline_is_kept_and_reloads_the_neuron(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, settings: QtCore.QSettings
) -> None:
    browser.go(0, 1)
    wait_loaded(loop, browser, ref(0, 1))
    events = Events(browser)
    browser.set_offline(True)
    assert browser.desk.offline and BrowserState.saved_offline(settings)
    assert events.of("offline") == [True]
    assert events.of("loading") == [ref(0, 1)]
    wait_loaded(loop, browser, ref(0, 1))
    record = browser.data.record if browser.data is not None else None
    assert record is not None and getattr(record, "origin", "") == "store"
    browser.set_offline(True)  # no change: no announcement
    assert events.of("offline") == [True]
    browser.set_offline(False)
    assert not BrowserState.saved_offline(settings)
    wait_loaded(loop, browser, ref(0, 1))


def write_related(layout: Path, layer: int, index: int, related: RelatedNeurons) -> None:
    path = layout / f"related-neurons/weight-based/{layer}/{index}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(codec.dumps(related))


RELATED = RelatedNeurons(
    c_fc=None,
    c_proj=NeuronConnections(
        top_positive_neurons=["0_1", "0_2", "0_1"],
        top_negative_neurons=["1_5"],
        top_positive_weights=[0.5, 0.4, 0.3],
        top_negative_weights=[-0.3],
    ),
)


def test_related_neurons_get_their_best_explanation(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, layout: Path, store: Store
) -> None:
    write_related(layout, 0, 0, RELATED)
    own = Explanations(store)
    own.add(ref(0, 2), "a stored idea", 0.1, "generated", {})
    own.add(ref(0, 2), "the best stored idea", 0.7, "user", {})
    events = Events(browser)
    browser.go(0, 0)
    run_until(loop, lambda: len(events.of("related")) == 3 and not browser.related_in_flight())
    assert events.of("related")[0] == (ref(0, 2), "the best stored idea", 0.7)  # at once
    assert sorted(events.of("related")) == [
        (ref(0, 1), " words with the letter e (0:1)", 0.42),  # published, fetched
        (ref(0, 2), "the best stored idea", 0.7),
        (ref(1, 5), NOT_EXPLAINED, None),  # the mirror has nothing for 1:5
    ]
    assert not browser.tasks.running(BrowserState.RELATED_TASK)


def settled(browser: BrowserState, target: NeuronRef, fetching: int = 0) -> bool:
    """Loaded, the related fill-in run, and `fetching` fetches left (the test's loop stops in
    between, and qasync's last pass of Qt events has no running loop for an httpx step)."""
    return (
        browser.current == target
        and browser.data is not None
        and not browser.tasks.running(BrowserState.RELATED_TASK)
        and browser.related_in_flight() == fetching
    )


def test_a_related_fetch_outlives_a_switch_and_is_kept_for_the_way_back(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, layout: Path, mirror: Mirror
) -> None:
    write_related(layout, 0, 0, RELATED)
    mirror.faults.delay_s["explanations/0/1.jsonl"] = 0.5
    events = Events(browser)
    browser.go(0, 0)
    run_until(loop, lambda: settled(browser, ref(0, 0), fetching=1))  # only 0:1 is slow
    before = len(events.of("related"))
    browser.go(0, 3)  # the slow fetch of 0:1 goes on...
    run_until(loop, lambda: settled(browser, ref(0, 3)))
    assert len(events.of("related")) == before  # ...but 0:3 lists nothing: nothing announced
    assert ref(0, 1) not in [r for r, _, _ in events.of("related")]
    asked, seen = len(mirror.faults.requests), len(events.of("related"))
    browser.back()
    run_until(
        loop, lambda: settled(browser, ref(0, 0)) and len(events.of("related")) == seen + 3
    )
    assert (ref(0, 1), " words with the letter e (0:1)", 0.42) in events.of("related")[seen:]
    assert not [p for p in mirror.faults.requests[asked:] if p.startswith("explanations/")]


def test_related_explanations_are_fetched_all_at_once(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, layout: Path, mirror: Mirror
) -> None:
    """Every listed neuron's explanation in flight at the same time, over real sockets to a
    mirror that answers after 100 ms (counted at the mirror; how fast the dock fills is
    `app_browsing.py`'s figure, not a timed test)."""
    many = RelatedNeurons(
        c_fc=NeuronConnections(
            top_positive_neurons=[f"1_{i}" for i in range(6)],
            top_negative_neurons=[f"0_{i}" for i in range(1, 7)],
            top_positive_weights=[0.5 - i / 100 for i in range(6)],
            top_negative_weights=[-0.5 + i / 100 for i in range(6)],
        ),
        c_proj=None,
    )
    write_related(layout, 0, 0, many)
    events = Events(browser)
    mirror.faults.latency_s = 0.1
    # The checker processes ready first (a browsing session's state: the files asked while
    # they start wait for them, tested in tests/data/test_checker.py); on a busy machine one
    # starting late had its share go out after the other's were answered.
    checker = browser.desk.service.checker
    browser.desk.service.expect_summaries("mirror")
    run_until(loop, lambda: checker is None or checker.ready(every=True), timeout=30)
    browser.go(0, 0)
    run_until(loop, lambda: settled(browser, ref(0, 0)) and len(events.of("related")) == 12)
    assert mirror.faults.max_in_flight >= 12  # one after another: 1


def test_the_neurons_with_data_are_listed_anew_once_the_store_changes(
    make_desk: DeskFactory, store: Store, loop: asyncio.AbstractEventLoop
) -> None:
    """The listing is kept between neurons shown, and made again after a file is stored, by
    this desk or by another process (another connection to the same file)."""
    desk = make_desk()
    assert desk.available_neurons("mirror") == []
    loop.run_until_complete(desk.neuron(ref(0, 2)))  # fetched: stored
    assert desk.available_neurons("mirror") == [ref(0, 2)]
    other = Store.open(store.path)
    try:
        record = store.get_file(ref(0, 2), "activations")
        assert record is not None
        other.put_file(ref(1, 1), "activations", record.text, "import")
    finally:
        other.close()
    assert desk.available_neurons("mirror") == [ref(0, 2), ref(1, 1)]
    assert desk.available_neurons("mirror", layer=1) == [ref(1, 1)]


def test_panes_keep_the_last_neuron_until_the_next_is_there_or_100_ms_pass(
    make_window: Any, mirror: Mirror, loop: asyncio.AbstractEventLoop
) -> None:
    """A quick load goes from one neuron's panes to the next without a "loading…" state in
    between; a slow one says "loading…" after 100 ms."""
    window = make_window()
    window.browser.go_to(NeuronRef("mirror", 0, 2))
    run_until(loop, lambda: window.browser.data is not None)
    rows = window.dataset_pane.model.rowCount()
    assert rows > 0
    window.browser.go_to(NeuronRef("mirror", 0, 3))
    assert window.subtitle.text() == "loading…"
    assert window.dataset_pane.model.rowCount() == rows  # not cleared at the pick
    run_until(loop, lambda: window.browser.data is not None)
    assert window.browser.data.ref == NeuronRef("mirror", 0, 3)
    assert window.dataset_pane.model.rowCount() > 0
    assert "loading" not in window.dataset_pane.status.text()

    mirror.faults.latency_s = 0.5  # a slow network: the next neuron is not there in 100 ms
    window.browser.go_to(NeuronRef("mirror", 0, 4))
    run_until(loop, lambda: window.dataset_pane.status.text() == "loading…", timeout=0.45)
    assert window.dataset_pane.model.rowCount() == 0 and window.browser.data is None
    run_until(loop, lambda: window.browser.data is not None)
    assert window.dataset_pane.model.rowCount() > 0


def test_related_neurons_are_looked_up_in_one_task_where_nothing_is_fetched(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, layout: Path, store: Store,
    mirror: Mirror,
) -> None:
    """Offline (as on the bundled sample or a folder), every related neuron's explanation is a
    read of the store: one task looks them all up, none is a fetch task of its own."""
    write_related(layout, 0, 0, RELATED)
    browser.go(0, 0)  # online: its files (the related list too) are stored
    run_until(loop, lambda: settled(browser, ref(0, 0)))
    Explanations(store).add(ref(0, 2), "the best stored idea", 0.7, "user", {})
    offline = BrowserState(browser.desk, None)  # a fresh memory of related explanations
    offline.desk.offline = True
    started: list[str] = []
    real_start = offline.tasks.start

    def start(name: str, coroutine: Any, on_error: Any = None) -> Any:
        started.append(name)
        return real_start(name, coroutine, on_error)

    offline.tasks.start = start  # type: ignore[method-assign]
    events = Events(offline)
    asked = len(mirror.faults.requests)
    try:
        offline.go_to(ref(0, 0))
        run_until(
            loop,
            lambda: len(events.of("related")) == 3
            and not offline.related_in_flight()
            and not offline.tasks.running(BrowserState.RELATED_LOOKUP_TASK),
        )
        assert sorted(events.of("related")) == [
            (ref(0, 1), " words with the letter e (0:1)", 0.42),  # stored while online
            (ref(0, 2), "the best stored idea", 0.7),
            (ref(1, 5), NOT_EXPLAINED, None),  # not stored: nothing fetched offline
        ]
        assert started.count(BrowserState.RELATED_LOOKUP_TASK) == 1
        assert not [n for n in started if n.startswith(BrowserState.RELATED_FETCH)]
        assert mirror.faults.requests[asked:] == []
        # Shown again: what was looked up is kept, no lookup is needed.
        offline.go_to(ref(0, 3))
        run_until(loop, lambda: settled(offline, ref(0, 3)))
        offline.go_to(ref(0, 0))
        run_until(loop, lambda: settled(offline, ref(0, 0)) and len(events.of("related")) == 6)
        assert started.count(BrowserState.RELATED_LOOKUP_TASK) == 1
    finally:
        loop.run_until_complete(offline.tasks.close())


def test_related_explanations_are_asked_before_the_neuron_is_shown(
    browser: BrowserState, loop: asyncio.AbstractEventLoop, layout: Path
) -> None:
    """With a checker process ready, the neighbours' requests go out as the neuron is loaded,
    before the loop turns again (the window paints the neuron then): before the dock's own
    tasks begin; their fetches are joined, not repeated."""
    write_related(layout, 0, 0, RELATED)
    checker = browser.desk.service.checker
    assert checker is not None and checker.start()
    run_until(loop, checker.ready)
    sent_when_loaded: list[int] = []
    browser.loaded.connect(  # the next turn of the loop, before the dock's tasks run
        lambda *_: loop.call_soon(lambda: sent_when_loaded.append(checker.sent))
    )
    events = Events(browser)
    browser.go(0, 0)
    run_until(loop, lambda: len(events.of("related")) == 3 and not browser.related_in_flight())
    assert sent_when_loaded == [3]  # 0:1, 0:2 and 1:5 (0:1 listed twice: asked once)
    assert checker.sent == 3
    assert sorted(events.of("related"))[0] == (ref(0, 1), " words with the letter e (0:1)", 0.42)
