"""Explainers: building without a backend, numbered lists, context trimming, responses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import BackendResponseError, PromptTooLongError
from neuron_desk.core.model import ActivationRecord
from neuron_desk.method import (
    ContextSize,
    FewShotExampleSet,
    PromptFormat,
    TokenActivationPairExplainer,
    TokenSpaceRepresentationExplainer,
)
from neuron_desk.method.tokens import count_tokens


class RecordingBackend:
    """An in-process LLMBackend returning canned completions and keeping the request bodies."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.bodies: list[JSONDict] = []

    async def completions(self, body: JSONDict) -> JSONDict:
        self.bodies.append(body)
        return {"choices": [{"text": t} for t in self.texts]}

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        self.bodies.append(body)
        return {"choices": [{"message": {"role": "assistant", "content": t}} for t in self.texts]}


def records(n: int, length: int = 64) -> list[ActivationRecord]:
    return [
        ActivationRecord(
            tokens=[f" w{i}_{j}" for j in range(length)],
            activations=[float(j % 7) for j in range(length)],
        )
        for i in range(n)
    ]


def test_built_without_backend_network_or_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    explainer = TokenActivationPairExplainer(model_name="any-model-name")  # no allowlist
    prompt = explainer.make_explanation_prompt(
        all_activation_records=records(2, 5), max_activation=6.0, max_tokens_for_completion=60
    )
    assert isinstance(prompt, list) and prompt[-1]["content"].endswith("this neuron does is find")


def test_generate_explanations_sends_chat_and_returns_texts() -> None:
    backend = RecordingBackend([" vowels.", " numbers"])
    explainer = TokenActivationPairExplainer("gpt-x", backend=backend)
    result = asyncio.run(
        explainer.generate_explanations(
            all_activation_records=records(2, 5), max_activation=6.0, num_samples=2
        )
    )
    assert result == [" vowels.", " numbers"]
    (body,) = backend.bodies
    assert body["model"] == "gpt-x" and body["n"] == 2 and body["max_tokens"] == 60
    assert {m["role"] for m in body["messages"]} == {"system", "user", "assistant"}
    assert all(type(m["role"]) is str for m in body["messages"])


def test_numbered_list_keeps_activations_and_splits_answers() -> None:
    backend = RecordingBackend(
        [" words about cats\n2. the main thing this neuron does is find dogs\n3. birds"]
    )
    explainer = TokenActivationPairExplainer(
        "m",
        prompt_format=PromptFormat.INSTRUCTION_FOLLOWING,
        few_shot_example_set=FewShotExampleSet.TEST,
        backend=backend,
    )
    result = asyncio.run(
        explainer.generate_explanations(
            all_activation_records=records(1, 3),
            max_activation=6.0,
            num_samples=1,
            numbered_list_of_n_explanations=3,
        )
    )
    assert result == ["words about cats", "dogs", "birds"]
    prompt = backend.bodies[0]["prompt"]
    assert " w0_1\t5\n w0_2\t10" in prompt
    assert prompt.endswith(
        'each beginning with "the main thing this neuron does is find":\n1. the main thing this neuron does is find<|endofprompt|>'
    )


def test_records_are_dropped_from_examples_when_the_prompt_is_too_long() -> None:
    explainer = TokenActivationPairExplainer("m", prompt_format=PromptFormat.INSTRUCTION_FOLLOWING)
    target = records(5)
    full = explainer.make_explanation_prompt(
        all_activation_records=target, max_activation=6.0, max_tokens_for_completion=60
    )
    assert isinstance(full, str)
    needed = count_tokens(full) + 60
    small = TokenActivationPairExplainer(
        "m", prompt_format=PromptFormat.INSTRUCTION_FOLLOWING, context_size=needed - 1
    )
    trimmed = small.make_explanation_prompt(
        all_activation_records=target, max_activation=6.0, max_tokens_for_completion=60
    )
    assert isinstance(trimmed, str)
    assert count_tokens(trimmed) + 60 <= needed - 1
    # One record left out of one few-shot example (twice if it was also repeated non-zero).
    assert full.count("<start>") - trimmed.count("<start>") in (1, 2)
    two_k = TokenActivationPairExplainer(
        "m", prompt_format=PromptFormat.INSTRUCTION_FOLLOWING, context_size=ContextSize.TWO_K
    )
    short = two_k.make_explanation_prompt(
        all_activation_records=target, max_activation=6.0, max_tokens_for_completion=60
    )
    assert isinstance(short, str) and " w1_0\t" in short and " w2_0\t" not in short


def test_token_space_explainer_rejects_an_overlong_list() -> None:
    explainer = TokenSpaceRepresentationExplainer("m", context_size=ContextSize.TWO_K)
    with pytest.raises(PromptTooLongError):
        explainer.make_explanation_prompt(
            tokens=[f" token{i}" for i in range(2000)], max_tokens_for_completion=60
        )


def test_token_space_postprocessing_strips_final_period() -> None:
    backend = RecordingBackend([" fruit.", " colours"])
    explainer = TokenSpaceRepresentationExplainer("m", backend=backend)
    result = asyncio.run(explainer.generate_explanations(tokens=["apple"], num_samples=2))
    assert result == [" fruit", " colours"]


def test_a_response_without_choices_is_a_clear_error() -> None:
    class Empty(RecordingBackend):
        async def chat_completions(self, body: JSONDict) -> Any:
            return {"error": "nope"}

    explainer = TokenActivationPairExplainer("m", backend=Empty([]))
    with pytest.raises(BackendResponseError, match="no choices"):
        asyncio.run(
            explainer.generate_explanations(
                all_activation_records=records(1, 3), max_activation=1.0
            )
        )


def test_numbered_list_prompts_obey_the_context(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14.6: 12 records of 64 tokens in a numbered list fit a 4K context, and it says so."""
    train = [
        ActivationRecord(
            tokens=[f" q{i}x{j}zv" for j in range(64)],
            activations=[float((i * 7 + j * 3) % 11) for j in range(64)],
        )
        for i in range(12)
    ]
    explainer = TokenActivationPairExplainer("m", prompt_format=PromptFormat.INSTRUCTION_FOLLOWING)
    with caplog.at_level("WARNING"):
        prompt = explainer.make_explanation_prompt(
            all_activation_records=train,
            max_activation=10.0,
            max_tokens_for_completion=60,
            numbered_list_of_n_explanations=3,
        )
    assert isinstance(prompt, str)
    assert count_tokens(prompt) + 60 <= int(ContextSize.FOUR_K)
    assert 0 < explainer.dropped_records < 12
    assert f"{explainer.dropped_records} of the neuron's 12 records dropped" in caplog.text
    assert "1. the main thing this neuron does is find" in prompt
