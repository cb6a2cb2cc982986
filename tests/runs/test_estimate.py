"""Estimates before a run: the same requests the run sends, counted without sending them."""

from __future__ import annotations

import asyncio

import pytest

from neuron_desk.core.model import SimulatorMethod
from neuron_desk.data.store import Store
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.ledger import Price, PriceTable
from neuron_desk.runs.run import NeuronRun, RunOptions
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import neuron_record, oracle

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "method",
    [
        SimulatorMethod.PROMPT_LOGPROBS,
        SimulatorMethod.CHAT_GENERATION,
        SimulatorMethod.ONE_AT_A_TIME,
    ],
)
def test_estimate_matches_the_run_and_then_everything_is_cached(
    store: Store, method: SimulatorMethod
) -> None:
    fake = FakeOpenAI(neuron=oracle)
    prices = PriceTable()
    prices.set("fake-model", Price(2.0, 8.0))
    options = RunOptions(explainer_model="fake-model", simulator_model="fake-model", method=method)

    async def go() -> None:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                run = NeuronRun(client, options, store=store, prices=prices)
                before = await run.estimate_score(neuron_record(), "the letter e", method)
                assert fake.requests == []  # an estimate sends nothing
                assert before.cached_requests == 0 and before.prompt_tokens > 0
                assert before.cost is not None and before.cost > 0
                assert before.prompts and "the letter e" in before.prompts[0][1]
                await run.score(neuron_record(), "the letter e")
                assert len(fake.requests) == before.requests
                after = await run.estimate_score(neuron_record(), "the letter e", method)
                assert after.requests == after.cached_requests == before.requests
                assert after.prompt_tokens == 0 and after.cost == 0

    asyncio.run(go())


def test_explain_estimate_counts_the_explanation_and_its_scoring(store: Store) -> None:
    options = RunOptions(explainer_model="fake-model", simulator_model="fake-model", samples=3)

    async def go() -> None:
        run = NeuronRun(_Unused(), options, store=store)
        estimate = await run.estimate_explain(neuron_record(), SimulatorMethod.PROMPT_LOGPROBS)
        assert estimate.requests == 1 + 3 * 10  # one explanation request, 3 x 10 simulations
        assert estimate.cost is None  # no price configured
        assert "not probed" not in "\n".join(estimate.notes)
        unknown = await run.estimate_explain(neuron_record())
        assert any("not probed yet" in n for n in unknown.notes)
        assert "no price configured" in unknown.describe()

    asyncio.run(go())


class _Unused:
    """A backend that must not be called."""

    endpoint_id = "http://unused/v1"

    async def completions(self, body: dict) -> dict:
        raise AssertionError("an estimate sent a request")

    async def chat_completions(self, body: dict) -> dict:
        raise AssertionError("an estimate sent a request")
