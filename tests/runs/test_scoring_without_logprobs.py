"""Issue 14.3: scoring on endpoints without logprobs, on a real model's neuron (the bundled sample)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from neuron_desk.core.model import NeuronRecord, SimulatorMethod
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.method.activations import normalize_activations
from neuron_desk.method.simulators import SOURCE_WRITTEN
from neuron_desk.runs.run import NeuronRun, RunOptions
from tests.fake_openai import FakeOpenAI, FakeServer

pytestmark = pytest.mark.integration

SAMPLE = NeuronRef("smollm2-135m", 0, 603)


def real_neuron() -> NeuronRecord:
    """A real model's neuron from the bundled sample (SmolLM2-135M, layer 0, neuron 603)."""
    desk = Desk.open(Paths.from_env())
    try:
        return asyncio.run(desk.record(SAMPLE))
    finally:
        desk.close()


def perfect_oracle(record: NeuronRecord):  # type: ignore[no-untyped-def]
    """The neuron's own normalized activations on each of its records: a perfect simulator."""
    table: dict[tuple[str, ...], list[int]] = {}
    records = record.most_positive_activation_records + record.random_sample
    for r in records:
        table[tuple(r.tokens)] = normalize_activations(r.activations, record.max_activation)

    def neuron(tokens: Sequence[str]) -> list[int]:
        return table.get(tuple(tokens), [0] * len(tokens))

    return neuron


@pytest.mark.parametrize(
    ("forced", "method"),
    [
        (None, SimulatorMethod.CHAT_WRITTEN_DIGITS),
        (SimulatorMethod.LOGPROB_FREE, SimulatorMethod.LOGPROB_FREE),
    ],
)
def test_a_perfect_oracle_without_logprobs_scores_the_real_neuron(
    store: Store, forced: SimulatorMethod | None, method: SimulatorMethod
) -> None:
    record = real_neuron()
    fake = FakeOpenAI(neuron=perfect_oracle(record), logprobs=False)

    async def go():  # type: ignore[no-untyped-def]
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=8) as client:
                options = RunOptions(simulator_model="fake-model", method=forced)
                run = NeuronRun(client, options, store=store, profile="test")
                return await run.score(record, "a real neuron", ref=SAMPLE), run

    outcome, run = asyncio.run(go())
    assert outcome.method == method
    assert outcome.preferred_score() is not None and outcome.preferred_score() > 0.9
    data = outcome.to_json()
    assert data["method"] == method.value
    positions = 64 * 10 if len(record.most_positive_activation_records[0].tokens) == 64 else None
    sources = data["value_sources"]
    assert sources[SOURCE_WRITTEN] == sum(sources.values()) and (
        positions is None or sources[SOURCE_WRITTEN] == positions
    )
    if forced is None:
        assert "written digits" in (run.choice.reason if run.choice else "")
    assert not any(body.get("logprobs") for _, body in fake.requests[-10:])
