"""The facade over a real store and the dataset mirror on 127.0.0.1: explanations listed once,
exports (offline too), best results, search, cache clearing, registry lookups without SQL, and
run options built one way from a profile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.core import codec
from neuron_desk.core.model import NeuronSimulationResults
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.llm.profiles import Profile
from neuron_desk.runs.options import RunOptions
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Mirror

REF = NeuronRef("mirror", 0, 1)


@pytest.fixture
def desk(store: Store, mirror: Mirror, tmp_path: Path) -> Iterator[Desk]:
    registry = Registry(store, bundled=[])
    registry.add(mirror_dataset(mirror.base_url))
    service = NeuronService(registry, store, timeout_s=5.0, http_backoff_s=0.01)
    yield Desk(store, registry, service, paths=Paths.at(tmp_path / "home"))
    asyncio.run(service.aclose())


def test_explanations_listed_published_then_own_and_exported(desk: Desk, tmp_path: Path) -> None:
    desk.explanations.add(REF, "first mine", 0.3, "user", {"model": "m", "method": "chat"})
    desk.explanations.add(REF, "second mine", None, "generated", {"model": "m"})
    data = asyncio.run(desk.neuron(REF))
    listed = desk.listed_explanations(data)
    assert [(e.explanation, e.source) for e in listed] == [
        (" words with the letter e (0:1)", "published"),
        ("first mine", "user"),
        ("second mine", "generated"),
    ]
    assert listed[1].method == "chat" and listed[1].model == "m"
    export = desk.export_of(data)
    path, sidecar = desk.write_export(export, tmp_path / "n.jsonl")
    results = codec.loads(path.read_text(), NeuronSimulationResults)
    assert [e.explanation for e in results.scored_explanations] == [e.explanation for e in listed]
    provenance = json.loads(sidecar.read_text())
    assert [p["source"] for p in provenance] == ["published", "user", "generated"]
    # Offline, with the published file stored: the same export, nothing fetched.
    desk.offline = True
    again = asyncio.run(desk.export(REF))
    assert again.text() == export.text()
    # Offline and never fetched: the own explanations alone, not an error.
    other = NeuronRef("mirror", 0, 2)
    desk.explanations.add(other, "only mine", 0.5, "user", {})
    alone = asyncio.run(desk.export(other))
    assert [e.explanation for e in alone.results.scored_explanations] == ["only mine"]


def test_best_results_order_zero_above_negative_and_unscored_kept(desk: Desk) -> None:
    a, b, c = NeuronRef("mirror", 0, 0), NeuronRef("mirror", 0, 1), NeuronRef("mirror", 1, 0)
    desk.explanations.add(a, "negative", -0.5, "generated", {})
    desk.explanations.add(a, "zero", 0.0, "generated", {})
    desk.explanations.add(b, "unscored", None, "generated", {})
    desk.explanations.add(c, "unscored first", None, "user", {})
    desk.explanations.add(c, "scored later", -0.9, "user", {})
    best = {row.ref: (row.explanation, row.score) for row in desk.best_results("mirror")}
    assert best == {a: ("zero", 0.0), b: ("unscored", None), c: ("scored later", -0.9)}
    assert desk.best_explanation(a) is not None and desk.best_explanation(a).score == 0.0  # type: ignore[union-attr]


def test_search_and_clearing_the_cache_keeps_own_explanations(desk: Desk) -> None:
    asyncio.run(desk.neuron(REF))
    desk.explanations.add(REF, "letter hypothesis of mine", 0.1, "user", {})
    assert {r.source for r in desk.search("letter")} == {"published", "user"}
    stats = desk.cache_stats("mirror")
    assert {f["kind"] for f in stats["files"]} >= {"activations", "explanations"}
    assert desk.clear_cache("mirror") > 0
    assert [r.source for r in desk.search("letter")] == ["user"]
    assert desk.cache_stats("mirror")["files"] == []


def test_registry_lookups_run_no_sql_after_the_first(desk: Desk) -> None:
    desk.registry.get("mirror")
    statements: list[str] = []
    desk.store._db.set_trace_callback(statements.append)
    try:
        for _ in range(20):
            desk.registry.get("mirror")
            desk.ref("mirror", 1, 7)
    finally:
        desk.store._db.set_trace_callback(None)
    assert statements == []


def test_run_options_come_from_the_profile_with_overrides() -> None:
    profile = Profile(
        name="p",
        base_url="http://h/v1",
        explainer_model="big",
        simulator_model="base",
        budget_tokens=1000,
        budget_usd=2.0,
        simulator_method="chat",
    )
    options = RunOptions.for_profile(profile)
    assert (options.explainer_model, options.simulator_model) == ("big", "base")
    assert (options.budget.max_tokens, options.budget.max_cost) == (1000, 2.0)
    assert options.method is not None and options.method.value == "all_at_once_chat_generation"
    override = RunOptions.for_profile(profile, model="m", budget_tokens=10, samples=3)
    assert (override.explainer_model, override.simulator_model) == ("m", "m")
    assert (override.budget.max_tokens, override.budget.max_cost) == (10, 2.0)
    assert override.samples == 3
