"""The checker processes (data/checker.py): a neighbour's published explanation is fetched
and checked in another process, and the service stores only what that process accepted,
under the neuron it was asked about. Real child processes, the mirror over real sockets, a
real SQLite store; a child that dies, or answers for another file, loses nothing."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError, NotFound
from neuron_desk.core.model import (
    NeuronId,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSimulation,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.checker import Checker, CheckerUnavailable
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.data.validation import accept
from tests.data.mirror import Mirror

HTTP = {"timeout_s": 5.0, "retries": 1, "backoff_s": 0.01, "file_time_s": 10.0}


def ref(layer: int, index: int) -> NeuronRef:
    return NeuronRef("mirror", layer, index)


def explanations_path(layout: Path, layer: int, index: int) -> Path:
    return layout / Kind.EXPLANATIONS.relative_path(layer, index)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


def with_service(
    registry: Registry, store: Store, work: Callable[[NeuronService], Awaitable[Any]],
    *, warm: bool = True,
) -> Any:
    """Run `work` with a service whose checker process is ready (`warm`) or starting."""

    async def go() -> Any:
        s = NeuronService(registry, store, timeout_s=5.0, http_backoff_s=0.01, checker_processes=1)
        try:
            if warm:
                assert s.checker is not None and s.checker.start()
                await until(s.checker.ready)
            return await work(s)
        finally:
            await s.aclose()

    return asyncio.run(go())


def test_a_fetched_explanation_is_checked_in_the_checker_and_stored_as_served(
    registry: Registry, store: Store, mirror: Mirror, layout: Path
) -> None:
    async def work(s: NeuronService) -> tuple[Any, Any, int]:
        first = await s.first_published(ref(0, 1))
        again = await s.first_published(ref(0, 1))  # from the store now
        assert s.checker is not None
        return first, again, s.checker.answered

    first, again, answered = with_service(registry, store, work)
    assert first == again == (" words with the letter e (0:1)", 0.42)
    assert answered == 1  # checked in the child, not here
    stored = store.get_file(ref(0, 1), "explanations")
    assert stored is not None and stored.origin == "network"
    assert stored.text == explanations_path(layout, 0, 1).read_text()
    rows = Explanations(store).of(ref(0, 1))
    assert [(r.explanation, r.score, r.source) for r in rows] == [
        (" words with the letter e (0:1)", 0.42, "published")
    ]
    assert mirror.faults.requests.count("explanations/0/1.jsonl") == 1


def test_a_malformed_file_is_refused_naming_it_and_nothing_is_stored(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    mirror.faults.truncate.add("explanations/0/2.jsonl")

    async def work(s: NeuronService) -> None:
        with pytest.raises(CodecError, match=r"network file explanations/0/2\.jsonl"):
            await s.first_published(ref(0, 2))

    with_service(registry, store, work)
    assert store.get_file(ref(0, 2), "explanations") is None
    assert Explanations(store).of(ref(0, 2)) == []


def test_a_file_naming_another_neuron_is_stored_under_neither(
    registry: Registry, store: Store, mirror: Mirror, layout: Path
) -> None:
    other = NeuronSimulationResults(
        NeuronId(0, 4), [ScoredExplanation("a file for 0:4", ScoredSimulation([], 0.9))]
    )
    explanations_path(layout, 0, 3).write_text(codec.dumps(other) + "\n")

    async def work(s: NeuronService) -> None:
        with pytest.raises(CodecError, match="not 0:3"):
            await s.first_published(ref(0, 3))

    with_service(registry, store, work)
    assert store.get_file(ref(0, 3), "explanations") is None
    assert store.get_file(ref(0, 4), "explanations") is None
    assert Explanations(store).of(ref(0, 3)) == Explanations(store).of(ref(0, 4)) == []


def test_a_missing_file_is_not_found_and_remembered_as_absent(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> None:
        for _ in range(2):
            with pytest.raises(NotFound, match="1:5"):
                await s.first_published(ref(1, 5))

    with_service(registry, store, work)
    assert store.is_absent(ref(1, 5), "explanations")
    assert mirror.faults.requests.count("explanations/1/5.jsonl") == 1


def test_while_the_checker_starts_a_file_is_checked_here(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> tuple[Any, int]:
        best = await s.first_published(ref(0, 5))  # the child is not ready yet
        assert s.checker is not None
        return best, s.checker.answered

    best, answered = with_service(registry, store, work, warm=False)
    assert best == (" words with the letter e (0:5)", 0.42)
    assert answered == 0
    assert store.get_file(ref(0, 5), "explanations") is not None


def test_a_checker_that_died_loses_nothing(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> tuple[Any, Any]:
        assert s.checker is not None
        assert s.checker.answered == 0
        for pid in s.checker.process_ids():
            os.kill(pid, 9)
        await until(lambda: not s.checker.process_ids())  # type: ignore[union-attr]
        first = await s.first_published(ref(1, 0))  # checked here meanwhile
        await until(s.checker.ready)  # a new child started
        second = await s.first_published(ref(1, 1))
        assert s.checker.answered == 1  # the second by the new child, the first here
        return first, second

    first, second = with_service(registry, store, work)
    assert first == (" words with the letter e (1:0)", 0.42)
    assert second == (" words with the letter e (1:1)", 0.42)
    assert store.get_file(ref(1, 0), "explanations") is not None
    assert store.get_file(ref(1, 1), "explanations") is not None


LYING_CHILD = """
import sys
import neuron_desk.data.checker as checker
honest = checker._verdict
def lying(number, kind, dataset, ref, source, body, *, to_store):
    answer = honest(number, kind, dataset, ref, source, body, to_store=to_store)
    return (answer[0], answer[1], (ref.dataset, ref.layer, ref.index + 1, kind.value), answer[3])
checker._verdict = lying
checker._main()
"""


def test_an_answer_for_another_file_is_not_used(
    registry: Registry, mirror: Mirror, tmp_path: Path
) -> None:
    script = tmp_path / "lying_child.py"
    script.write_text(LYING_CHILD)
    dataset = registry.get("mirror")

    async def go() -> None:
        checker = Checker(1, [sys.executable, str(script)])
        try:
            checker.start()
            await until(checker.ready)
            with pytest.raises(CheckerUnavailable, match="another file"):
                await checker.fetch(
                    Kind.EXPLANATIONS, mirror.base_url, "explanations/0/1.jsonl",
                    dataset=dataset, ref=ref(0, 1), http=HTTP,
                )
            await until(lambda: not checker.process_ids())  # that child is not used again
        finally:
            checker.close()

    asyncio.run(go())


def test_a_body_sent_to_the_checker_gets_the_borders_verdict(
    registry: Registry, layout: Path
) -> None:
    dataset = registry.get("mirror")
    good = explanations_path(layout, 0, 1).read_bytes()
    bad = good.replace(b'"explanation"', b'"explanations"', 1)
    with pytest.raises(CodecError) as here:
        accept(Kind.EXPLANATIONS, bad, dataset=dataset, ref=ref(0, 1), source="the file")

    async def go() -> tuple[Any, str]:
        checker = Checker(1)
        try:
            checked = await checker.check(
                Kind.EXPLANATIONS, good, dataset=dataset, ref=ref(0, 1), source="the file"
            )
            with pytest.raises(CodecError) as there:
                await checker.check(
                    Kind.EXPLANATIONS, bad, dataset=dataset, ref=ref(0, 1), source="the file"
                )
            return checked, str(there.value)
        finally:
            checker.close()

    checked, refusal = asyncio.run(go())
    assert checked.rows == [(" words with the letter e (0:1)", 0.42)]
    assert checked.text is None and checked.repaired == ""  # the body as sent is stored
    assert refusal == str(here.value)


def test_closing_the_service_ends_its_checker_processes(registry: Registry, store: Store) -> None:
    async def work(s: NeuronService) -> list[int]:
        assert s.checker is not None
        return s.checker.process_ids()

    pids = with_service(registry, store, work)
    assert len(pids) == 1
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pids[0]}").exists() and "Z" not in _state(pids[0]):
        assert time.monotonic() < deadline, "the checker process still runs"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_opening_a_network_neuron_starts_the_checker_and_a_prefetch_does_not(
    registry: Registry, store: Store, mirror: Mirror, tmp_path: Path
) -> None:
    from neuron_desk.core.paths import Paths
    from neuron_desk.desk import Desk

    async def go() -> tuple[list[int], list[int], list[int]]:
        fetching = NeuronService(registry, store, timeout_s=5.0, checker_processes=1)
        offline = NeuronService(registry, store, offline=True, checker_processes=1)
        browsing = NeuronService(registry, store, timeout_s=5.0, checker_processes=1)
        try:
            await fetching.prefetch("mirror", [ref(0, 1)])
            offline.expect_summaries("mirror")  # offline: nothing to fetch
            desk = Desk(store, registry, browsing, paths=Paths.at(tmp_path))
            await desk.neuron(ref(0, 2))
            assert fetching.checker and offline.checker and browsing.checker
            return (
                fetching.checker.process_ids(),
                offline.checker.process_ids(),
                browsing.checker.process_ids(),
            )
        finally:
            for s in (fetching, offline, browsing):
                await s.aclose()

    prefetched, offline, browsed = asyncio.run(go())
    assert prefetched == [] and offline == []
    assert len(browsed) == 1  # started while the neuron loaded, before any summary is asked
