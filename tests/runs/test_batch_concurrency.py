"""A batch of concurrent neurons against the real-socket fake server: one capability probe for
the whole batch, sent alongside the first explanations, and `--concurrency` raising the
number of requests on the wire above the profile's `max_concurrency`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.core import codec
from neuron_desk.core.errors import BackendConfigError
from neuron_desk.core.model import NeuronId, SimulatorMethod
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Kind
from neuron_desk.desk import Desk
from neuron_desk.llm.capabilities import PROBE_MESSAGE, PROBE_PROMPT
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.local import LocalBackend
from neuron_desk.runs.batch import BatchSpec, BatchSummary, raise_in_flight_limit
from neuron_desk.runs.options import RunOptions
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import neuron_record, oracle

pytestmark = pytest.mark.integration

LATENCY = 0.5
NEURONS = 16


def is_probe(body: dict) -> bool:  # type: ignore[type-arg]
    return body.get("prompt") == PROBE_PROMPT or any(
        m.get("content") == PROBE_MESSAGE for m in body.get("messages") or []
    )


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[tuple[Desk, list[NeuronRef]]]:
    """A desk over a store holding NEURONS synthetic neurons' activation records."""
    desk = Desk.open(Paths.at(tmp_path / "home"), bundled=[])
    desk.registry.add(
        Dataset(
            name="synthetic",
            title="synthetic neurons",
            model="synthetic",
            n_layers=1,
            n_neurons=NEURONS,
            kinds=(Kind.ACTIVATIONS,),
            tokenizer="gpt2",
            folder=str(tmp_path / "folder"),
        )
    )
    refs = [NeuronRef("synthetic", 0, i) for i in range(NEURONS)]
    for ref in refs:
        record = neuron_record(seed=ref.index, n_top=10, n_random=10)
        record.neuron_id = NeuronId(0, ref.index)
        desk.store.put_file(ref, Kind.ACTIVATIONS.value, codec.dumps(record), "import")
    yield desk, refs
    desk.close()


def run_batch(desk: Desk, refs: list[NeuronRef], base_url: str, concurrency: int) -> BatchSummary:
    profile = desk.profile(None, base_url)
    assert profile.max_concurrency == 8  # the default profile's limit
    options = RunOptions.for_profile(profile, model="fake-model")  # auto: the probe chooses
    options.n_examples_per_split = 2
    spec = BatchSpec("synthetic", tuple(refs), profile.name, 1, "concurrency")
    run = desk.run(profile, options, run_id=spec.batch_id)

    async def go() -> BatchSummary:
        try:
            return await desk.batch(spec, run, concurrency=concurrency)
        finally:
            await desk.aclose()

    return asyncio.run(go())


def test_a_batch_of_16_concurrent_neurons_probes_once_alongside_the_explanations(
    desk: tuple[Desk, list[NeuronRef]],
) -> None:
    fake = FakeOpenAI(neuron=oracle, explanation=" words with the letter e", latency=LATENCY)
    with FakeServer(fake) as server:
        summary = run_batch(*desk, server.base_url, concurrency=NEURONS)
    assert summary.explained == NEURONS and summary.failed == 0, summary.errors
    probes = [i for i, (_path, body) in enumerate(fake.requests) if is_probe(body)]
    # One probe for the endpoint + model: echo with logprobs (it works, so no completion
    # logprobs request) and chat top_logprobs. Before, every neuron probed: 2 x 16.
    assert len(probes) == 2
    # The probe does not wait for an explanation's answer: it goes out with the first ones,
    # before the first of them can have been answered (before, it came after that answer).
    first_probe = fake.arrived[probes[0]]
    assert first_probe - fake.arrived[0] < LATENCY
    assert summary.methods == {SimulatorMethod.PROMPT_LOGPROBS.value: NEURONS}  # probe chose it


def test_concurrency_raises_the_requests_in_flight_above_the_profiles_limit(
    desk: tuple[Desk, list[NeuronRef]],
) -> None:
    fake = FakeOpenAI(neuron=oracle, explanation=" words with the letter e", latency=LATENCY)
    with FakeServer(fake) as server:
        summary = run_batch(*desk, server.base_url, concurrency=NEURONS)
    assert fake.max_active == NEURONS  # the profile allows 8; --concurrency 16 raised it
    assert summary.notes == []


def test_concurrency_that_cannot_be_raised_says_why_in_one_line() -> None:
    note = asyncio.run(raise_in_flight_limit(LocalBackend(), 16))
    assert "--concurrency 16" in note and "one slot" in note and "\n" not in note


def test_a_client_with_requests_in_flight_keeps_its_limit_and_says_so() -> None:
    fake = FakeOpenAI(hang=True)

    async def go() -> tuple[str, int]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=2) as client:
                body = {"model": "m", "messages": []}
                hanging = asyncio.ensure_future(client.chat_completions(body))
                while not fake.requests:
                    await asyncio.sleep(0.01)
                note = await raise_in_flight_limit(client, 16)
                with pytest.raises(BackendConfigError, match="in flight"):
                    await client.raise_concurrency(16)
                hanging.cancel()
                return note, client.max_concurrent

    note, limit = asyncio.run(go())
    assert limit == 2
    assert "--concurrency 16" in note and "in flight" in note


def test_an_idle_client_raises_its_limit_and_uses_it() -> None:
    fake = FakeOpenAI(latency=0.2)

    async def go() -> int:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=2) as client:
                await client.raise_concurrency(12)
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                await asyncio.gather(*(client.chat_completions(body) for _ in range(12)))
                return client.stats.max_in_flight

    assert asyncio.run(go()) == 12
    assert fake.max_active == 12
