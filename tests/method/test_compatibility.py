"""Issue 14.6: the compatibility setting reproduces the original where it differs."""

from __future__ import annotations

import re

import pytest

from neuron_desk.core.model import SimulatorMethod
from neuron_desk.llm.capabilities import SimulatorChoice, simulator_factory
from neuron_desk.method import ExplanationNeuronSimulator, PromptFormat
from neuron_desk.method.simulators import (
    SOURCE_DISTRIBUTION,
    SOURCE_FOLDED,
    parse_prompt_logprobs_response,
)
from tests.method.test_simulator_parsing import echo_response


def folding_tokenizer(text: str) -> list[str]:
    """Runs of newlines are one token, as GPT-2's tokenizer writes "\\n\\n"."""
    return re.findall(r"\n+|\t|unknown|[^\n\t]+", text)


def test_newline_tokens_fold_to_zero_only_under_the_compatibility_setting() -> None:
    tokens = [" a", "\n", " b"]
    prompt = ExplanationNeuronSimulator("m", "newlines").make_simulation_prompt(tokens)
    assert isinstance(prompt, str)
    pieces = folding_tokenizer(prompt)
    unknowns = [i for i, p in enumerate(pieces) if p == "unknown"][-3:]
    response = echo_response(prompt, pieces, {unknowns[0]: 0, unknowns[1]: 10, unknowns[2]: 0})
    default = parse_prompt_logprobs_response(response, prompt, tokens)
    assert default.value_sources == [SOURCE_DISTRIBUTION] * 3
    assert default.expected_activations[1] > 5
    compatible = parse_prompt_logprobs_response(response, prompt, tokens, fold_newlines=True)
    assert compatible.value_sources[1] == SOURCE_FOLDED
    assert compatible.expected_activations[1] == 0.0
    assert compatible.expected_activations[0] == pytest.approx(default.expected_activations[0])


def test_compatible_one_at_a_time_asks_completions_for_one_token() -> None:
    choice = SimulatorChoice(SimulatorMethod.ONE_AT_A_TIME, "forced", chat_one_at_a_time=True)
    simulator = simulator_factory(choice, "m", object(), compatible=True)("e")  # type: ignore[arg-type]
    assert simulator.prompt_format == PromptFormat.INSTRUCTION_FOLLOWING
    assert simulator.max_next_tokens == 1  # type: ignore[attr-defined]
    default = simulator_factory(choice, "m", object())("e")  # type: ignore[arg-type]
    assert default.prompt_format == PromptFormat.HARMONY_V4
    assert default.max_next_tokens == 2  # type: ignore[attr-defined]
