"""Operations without any widget: callbacks in order (finished, then success or failure),
cancellation, errors without a failure callback, exports, a probe and a scoring run through
the desk against the fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.model import NeuronSimulationResults
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from neuron_desk.llm.profiles import Profile, ProfileConfig
from neuron_desk.qt.asyncbridge import TaskSlots
from neuron_desk.qt.operations import Operation, Operations, Reporter
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.qt.conftest import DeskFactory, run_until


class Calls:
    """What an operation called back, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def watch(self, operation: Operation[Any]) -> Operation[Any]:
        return (
            operation.success(lambda result: self.log.append(("success", result)))
            .failure(lambda error: self.log.append(("failure", error)))
            .finished(lambda: self.log.append(("finished", None)))
            .progress(lambda done, total: self.log.append(("progress", (done, total))))
            .estimate(lambda text: self.log.append(("estimate", text)))
        )

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log if kind not in ("progress", "estimate")]


def test_callbacks_come_in_order(loop: asyncio.AbstractEventLoop) -> None:
    async def work(report: Reporter) -> int:
        report.estimate("about 3 steps")
        for i in range(3):
            report.progress(i + 1, 3)
        return 42

    calls = Calls()
    task = calls.watch(Operation(TaskSlots(), "test.op", work)).run()
    loop.run_until_complete(task)
    assert calls.log == [
        ("estimate", "about 3 steps"),
        ("progress", (1, 3)),
        ("progress", (2, 3)),
        ("progress", (3, 3)),
        ("finished", None),
        ("success", 42),
    ]


def test_a_failure_and_a_cancel(loop: asyncio.AbstractEventLoop) -> None:
    tasks = TaskSlots()

    async def fail(_: Reporter) -> None:
        raise OSError(2, "No such file")

    calls = Calls()
    loop.run_until_complete(calls.watch(Operation(tasks, "test.op", fail)).run())
    assert calls.kinds() == ["finished", "failure"]
    assert isinstance(calls.log[-1][1], OSError)

    async def forever(_: Reporter) -> None:
        await asyncio.sleep(3600)

    calls = Calls()
    calls.watch(Operation(tasks, "test.op", forever)).run()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert tasks.running("test.op")
    assert tasks.cancel("test.op")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls.kinds() == ["finished"]  # neither success nor failure


def test_a_new_operation_under_the_same_name_replaces_the_running_one(
    loop: asyncio.AbstractEventLoop,
) -> None:
    tasks = TaskSlots()

    async def slow(_: Reporter) -> str:
        await asyncio.sleep(0.2)
        return "slow"

    async def fast(_: Reporter) -> str:
        return "fast"

    first, second = Calls(), Calls()
    first.watch(Operation(tasks, "test.op", slow)).run()
    loop.run_until_complete(second.watch(Operation(tasks, "test.op", fast)).run())
    loop.run_until_complete(asyncio.sleep(0.3))
    assert first.kinds() == ["finished"] and second.log[-1] == ("success", "fast")


def test_without_a_failure_callback_the_error_goes_to_the_slots(
    loop: asyncio.AbstractEventLoop,
) -> None:
    errors: list[tuple[str, BaseException]] = []
    tasks = TaskSlots(lambda name, error: errors.append((name, error)))

    async def fail(_: Reporter) -> None:
        raise ValueError("boom")

    task = Operation(tasks, "test.op", fail).run()
    loop.run_until_complete(asyncio.wait([task]))
    assert [(name, str(error)) for name, error in errors] == [("test.op", "boom")]


def test_exports_through_the_desk(
    make_desk: DeskFactory, loop: asyncio.AbstractEventLoop, store: Store, tmp_path: Path
) -> None:
    desk = make_desk()
    ops = Operations(desk)
    ref = NeuronRef("mirror", 0, 4)
    Explanations(store).add(ref, "my idea", 0.5, "user", {"note": "mine"})
    target = tmp_path / "one.jsonl"
    calls = Calls()
    loop.run_until_complete(calls.watch(ops.export_neuron(ref, None, target)).run())
    assert calls.kinds() == ["finished", "success"]
    results = codec.loads(target.read_text(), NeuronSimulationResults)
    assert [e.explanation for e in results.scored_explanations] == [
        " words with the letter e (0:4)",  # fetched: the data was not loaded yet
        "my idea",
    ]
    sidecar = json.loads(Path(f"{target}.provenance.json").read_text())
    assert [p["source"] for p in sidecar] == ["published", "user"]
    calls = Calls()
    loop.run_until_complete(calls.watch(ops.export_generated("mirror", tmp_path / "all")).run())
    assert calls.log[-1] == ("success", 1)
    calls = Calls()
    bad = tmp_path / "missing-folder" / "x.jsonl"
    loop.run_until_complete(calls.watch(ops.export_neuron(ref, None, bad)).run())
    assert calls.kinds() == ["finished", "failure"] and isinstance(calls.log[-1][1], OSError)


def test_probe_and_score_through_the_desk(
    make_desk: DeskFactory,
    loop: asyncio.AbstractEventLoop,
    store: Store,
    fake: tuple[FakeOpenAI, FakeServer],
    tmp_path: Path,
) -> None:
    profile = Profile(
        name="fake", base_url=fake[1].base_url, explainer_model="m", simulator_model="m"
    )
    config = ProfileConfig(path=tmp_path / "profiles.json")
    config.put(profile)
    config.default = "fake"
    desk = make_desk(config)
    ops = Operations(desk)
    assert ops.profile_names()[0] == "fake" and ops.default_profile_name() == "fake"
    calls = Calls()
    loop.run_until_complete(calls.watch(ops.probe(profile)).run())
    assert calls.kinds() == ["finished", "success"]
    assert calls.log[-1][1].startswith("Connected.") and "prompt-logprobs" in calls.log[-1][1]
    ref = NeuronRef("mirror", 0, 2)
    record = loop.run_until_complete(desk.record(ref))
    calls = Calls()
    calls.watch(ops.score(ref, record, "fake", "the letter e")).run()
    run_until(loop, lambda: "finished" in calls.kinds(), timeout=30)
    assert calls.kinds() == ["finished", "success"], calls.log
    estimates = [text for kind, text in calls.log if kind == "estimate"]
    assert estimates[0] == "Estimating the cost of 1 explanation(s) on fake…"
    assert "requests:" in estimates[-2] and "to send" in estimates[-2]  # before it sent
    assert estimates[-1].startswith("sent: 10 request(s), 0 more answered from the cache")
    outcome = calls.log[-1][1]
    assert outcome.preferred_score() is not None and outcome.preferred_score() > 0.9
    (row,) = Explanations(store).of(ref, source="user")
    assert row.explanation == "the letter e" and row.id == outcome.stored_id
    loop.run_until_complete(ops.use_profiles(ProfileConfig(path=tmp_path / "p2.json")).run())
    assert "fake" not in ops.profile_names()
