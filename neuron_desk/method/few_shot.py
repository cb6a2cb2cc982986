"""The few-shot example sets of the original prompts, loaded from package data.

The examples are data (`few_shot/*.json` in `neuron_desk.resources`), carried over unchanged
from neuron-explainer, since the prompts they appear in are a protocol: published scores were
computed with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

import neuron_desk.resources as resources  # resources/, mapped by pyproject's package-dir
from neuron_desk.core.model import ActivationRecord


@dataclass
class Example:
    """A few-shot example for explaining or simulating a neuron."""

    activation_records: list[ActivationRecord]
    explanation: str
    first_revealed_activation_indices: list[int]
    """Per record, the first token whose activation the prompt shows (earlier ones: unknown)."""
    token_index_to_score: int | None = None
    """For one-token-at-a-time prompts: the token whose activation is asked for."""


@dataclass
class TokenSpaceExample:
    """A few-shot example for the token-space explainer: tokens and their explanation."""

    tokens: list[str]
    explanation: str


@cache
def _load(name: str) -> dict[str, Any]:
    text = resources.read_text("few_shot", name)
    data: dict[str, Any] = json.loads(text)
    return data


def _example(raw: dict[str, Any]) -> Example:
    return Example(
        activation_records=[
            ActivationRecord(
                tokens=list(r["tokens"]), activations=[float(a) for a in r["activations"]]
            )
            for r in raw["activation_records"]
        ],
        explanation=raw["explanation"],
        first_revealed_activation_indices=list(raw["first_revealed_activation_indices"]),
        token_index_to_score=raw.get("token_index_to_score"),
    )


def _examples(name: str) -> list[Example]:
    return [_example(raw) for raw in _load("few_shot_examples.json")[name]]


def _token_space_examples(name: str) -> list[TokenSpaceExample]:
    return [
        TokenSpaceExample(tokens=list(raw["tokens"]), explanation=raw["explanation"])
        for raw in _load("token_space_few_shot_examples.json")[name]
    ]


TEST_EXAMPLES = _examples("TEST_EXAMPLES")
ORIGINAL_EXAMPLES = _examples("ORIGINAL_EXAMPLES")
NEWER_EXAMPLES = _examples("NEWER_EXAMPLES")
TEST_SINGLE_TOKEN_EXAMPLE = _example(_load("few_shot_examples.json")["TEST_SINGLE_TOKEN_EXAMPLE"])
NEWER_SINGLE_TOKEN_EXAMPLE = _example(_load("few_shot_examples.json")["NEWER_SINGLE_TOKEN_EXAMPLE"])
TOKEN_SPACE_ORIGINAL_EXAMPLES = _token_space_examples("ORIGINAL_EXAMPLES")
TOKEN_SPACE_TEST_EXAMPLES = _token_space_examples("TEST_EXAMPLES")


class FewShotExampleSet(Enum):
    """Which few-shot examples a token/activation prompt uses."""

    ORIGINAL = "original"
    NEWER = "newer"
    TEST = "test"

    @classmethod
    def from_string(cls, string: str) -> FewShotExampleSet:
        """The set whose value is `string`."""
        for example_set in cls:
            if example_set.value == string:
                return example_set
        raise ValueError(f"Unrecognized example set: {string}")

    def get_examples(self) -> list[Example]:
        """The examples for explanation and all-at-once simulation prompts."""
        return {
            FewShotExampleSet.ORIGINAL: ORIGINAL_EXAMPLES,
            FewShotExampleSet.NEWER: NEWER_EXAMPLES,
            FewShotExampleSet.TEST: TEST_EXAMPLES,
        }[self]

    def get_single_token_prediction_example(self) -> Example:
        """The example for one-token-at-a-time prompts (NEWER and TEST only)."""
        if self is FewShotExampleSet.NEWER:
            return NEWER_SINGLE_TOKEN_EXAMPLE
        if self is FewShotExampleSet.TEST:
            return TEST_SINGLE_TOKEN_EXAMPLE
        raise ValueError(f"{self} has no single-token example; use NEWER")


class TokenSpaceFewShotExampleSet(Enum):
    """Which few-shot examples a token-space prompt uses."""

    ORIGINAL = "original"
    TEST = "test"

    def get_examples(self) -> list[TokenSpaceExample]:
        """The token-list examples of this set."""
        if self is TokenSpaceFewShotExampleSet.ORIGINAL:
            return TOKEN_SPACE_ORIGINAL_EXAMPLES
        return TOKEN_SPACE_TEST_EXAMPLES
