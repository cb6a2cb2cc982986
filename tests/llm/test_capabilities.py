"""The capability probe and the automatic simulator choice, against fake servers."""

from __future__ import annotations

import asyncio

import pytest

from neuron_desk.core.errors import BackendHTTPError, MethodError
from neuron_desk.core.model import SimulatorMethod
from neuron_desk.data.store import Store
from neuron_desk.llm.capabilities import (
    Capabilities,
    capabilities_for,
    choose_simulator,
    parse_method,
    probe,
    simulator_factory,
)
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.method import (
    ChatGenerationSimulator,
    ExplanationNeuronSimulator,
    ExplanationTokenByTokenSimulator,
    PromptFormat,
)
from tests.fake_openai import FakeOpenAI, FakeServer

pytestmark = pytest.mark.integration


def probe_fake(fake: FakeOpenAI) -> Capabilities:
    async def go() -> Capabilities:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                return await probe(client, "fake-model")

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("switches", "expected", "chat_top"),
    [
        ({}, SimulatorMethod.PROMPT_LOGPROBS, 20),  # vLLM, llama.cpp's Python server
        ({"echo": "reject"}, SimulatorMethod.CHAT_GENERATION, 20),  # llama.cpp C++ server
        ({"echo": "ignore"}, SimulatorMethod.CHAT_GENERATION, 20),  # echo without logprobs
        ({"completions_route": False}, SimulatorMethod.CHAT_GENERATION, 20),  # chat only
    ],
)
def test_probe_chooses_from_what_the_server_returns(
    switches: dict, expected: SimulatorMethod, chat_top: int
) -> None:
    caps = probe_fake(FakeOpenAI(**switches))
    assert caps.chat_top_logprobs == chat_top
    assert choose_simulator(caps).method == expected


def test_probe_finds_completion_logprobs_without_echo() -> None:
    """Only next-token logprobs on /completions (no echo, no chat logprobs): one-at-a-time."""
    fake = FakeOpenAI(echo="reject")
    caps = probe_fake(fake)
    caps.chat_top_logprobs = 0  # as if chat had none
    choice = choose_simulator(caps)
    assert caps.completion_logprobs > 0
    assert choice.method == SimulatorMethod.ONE_AT_A_TIME and not choice.chat_one_at_a_time


def test_no_logprobs_scores_with_written_digits_and_no_chat_explains_why_not() -> None:
    caps = probe_fake(FakeOpenAI(logprobs=False))
    assert caps.chat and caps.completions and not caps.any_logprobs
    choice = choose_simulator(caps, where="http://example (m)")
    assert choice.method == SimulatorMethod.CHAT_WRITTEN_DIGITS
    assert "written digits: the probe found no logprobs" in choice.reason
    caps.chat = False
    choice = choose_simulator(caps, where="http://example (m)")
    assert choice.method is None
    assert "scoring can't run on http://example (m)" in choice.reason
    assert "Explaining may still work" in choice.reason
    with pytest.raises(MethodError, match="returns no logprobs"):
        simulator_factory(choice, "m", object())  # type: ignore[arg-type]


def test_the_user_can_force_a_method() -> None:
    caps = probe_fake(FakeOpenAI())
    choice = choose_simulator(caps, SimulatorMethod.ONE_AT_A_TIME)
    assert choice.method == SimulatorMethod.ONE_AT_A_TIME and "chosen by the user" in choice.reason
    forced = choose_simulator(Capabilities(chat=True), SimulatorMethod.PROMPT_LOGPROBS)
    assert forced.method == SimulatorMethod.PROMPT_LOGPROBS
    assert "does not support it" in forced.reason


def test_probe_is_remembered_in_the_store(store: Store) -> None:
    fake = FakeOpenAI(echo="reject")

    async def go() -> tuple[Capabilities, Capabilities]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                first = await capabilities_for(client, server.base_url, "fake-model", store)
                sent = len(fake.requests)
                second = await capabilities_for(client, server.base_url, "fake-model", store)
                assert len(fake.requests) == sent  # remembered: no request
                await capabilities_for(client, server.base_url, "fake-model", store, refresh=True)
                assert len(fake.requests) > sent
                return first, second

    first, second = asyncio.run(go())
    assert first == second
    assert not first.prompt_logprobs and any("not supported" in n for n in first.notes)


def test_authentication_errors_are_not_capabilities() -> None:
    with pytest.raises(BackendHTTPError, match="401"):
        probe_fake(FakeOpenAI(fail_next=[401]))


def test_factory_builds_the_chosen_simulator() -> None:
    backend = object()
    caps = Capabilities(prompt_logprobs=True, prompt_top_logprobs=5, chat_top_logprobs=8)
    make = simulator_factory(choose_simulator(caps), "m", backend)  # type: ignore[arg-type]
    simulator = make("e")
    assert isinstance(simulator, ExplanationNeuronSimulator) and simulator.top_logprobs == 5
    chat = choose_simulator(caps, SimulatorMethod.CHAT_GENERATION)
    assert isinstance(simulator_factory(chat, "m", backend)("e"), ChatGenerationSimulator)  # type: ignore[arg-type]
    one = simulator_factory(
        choose_simulator(Capabilities(completion_logprobs=5)),
        "m",
        backend,  # type: ignore[arg-type]
    )("e")
    assert isinstance(one, ExplanationTokenByTokenSimulator)
    assert one.prompt_format == PromptFormat.INSTRUCTION_FOLLOWING


def test_method_names() -> None:
    assert parse_method("auto") is None
    assert parse_method("chat") == SimulatorMethod.CHAT_GENERATION
    assert parse_method("prompt-logprobs") == SimulatorMethod.PROMPT_LOGPROBS
    assert parse_method("one-at-a-time") == SimulatorMethod.ONE_AT_A_TIME
    with pytest.raises(ValueError, match="unknown simulator method"):
        parse_method("guess")


@pytest.mark.parametrize(
    ("status", "message", "fatal"),
    [
        (401, "Incorrect API key provided", True),
        (404, "The model `gpt-5-nano` does not exist or you do not have access to it.", True),
        (404, 'model "llama9" not found, try pulling it first', True),
        (404, "This is a chat model and not supported in the v1/completions endpoint.", False),
        (404, "Not Found", False),
        (400, "'echo' is not supported", False),
    ],
)
def test_which_errors_stop_the_probe(status: int, message: str, fatal: bool) -> None:
    from neuron_desk.llm.capabilities import _raise_if_fatal

    error = BackendHTTPError(status, message, "http://h/v1/completions")
    if fatal:
        with pytest.raises(BackendHTTPError):
            _raise_if_fatal(error)
    else:
        _raise_if_fatal(error)
