"""The original's LogprobFreeExplanationTokenSimulator prompt, byte for byte where it is shown."""

from __future__ import annotations

import json

import pytest

from neuron_desk.core.errors import SimulationParseError
from neuron_desk.method import FewShotExampleSet, LogprobFreeExplanationTokenSimulator
from neuron_desk.method.simulators import SOURCE_MISSING, parse_logprob_free_response


def test_prompt_layout() -> None:
    simulator = LogprobFreeExplanationTokenSimulator("m", "hello")
    prompt = simulator.make_simulation_prompt(["The", " cat"], "hello")
    assert isinstance(prompt, list)
    system = prompt[0]["content"]
    assert system.startswith("We're studying neurons in a neural network. Each neuron looks for ")
    assert system.endswith('from 0 to 10. Please think carefully.";\n')
    assert prompt[-1] == {
        "role": "user",
        "content": '{"to_find": "hello", "document": "The cat", "activations": [{"token": "The", '
        '"activation": null}, {"token": " cat", "activation": null}]}',
    }
    example = FewShotExampleSet.NEWER.get_examples()[0]
    answer = json.loads(prompt[2]["content"])
    assert prompt[2]["role"] == "assistant" and answer["to_find"] == example.explanation
    assert [a["activation"] for a in answer["activations"]] == list(
        example.activation_records[0].activations
    )
    with pytest.raises(ValueError):
        LogprobFreeExplanationTokenSimulator(
            "m", "x", few_shot_example_set=FewShotExampleSet.ORIGINAL
        )


def test_answers_are_read_without_inventing_zeros() -> None:
    content = json.dumps(
        {
            "activations": [
                {"token": "a", "activation": 7},
                {"token": "b", "activation": "x"},
                {"token": "c", "activation": 3.5},
            ]
        }
    )
    result = parse_logprob_free_response(
        {"choices": [{"message": {"content": content}}]}, ["a", "b", "c"]
    )
    assert result.expected_activations[0] == 7.0 and result.expected_activations[2] == 3.5
    assert result.missing_positions == [1] and result.value_sources[1] == SOURCE_MISSING
    with pytest.raises(SimulationParseError, match="one activation for each of the 4 tokens"):
        parse_logprob_free_response(
            {"choices": [{"message": {"content": content}}]}, ["a", "b", "c", "d"]
        )
