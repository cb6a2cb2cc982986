"""The original's explanation puzzles: a known explanation and sentences that follow it.

The data (`few_shot/puzzles.json` in `neuron_desk.resources`) is the original's, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import neuron_desk.resources as resources
from neuron_desk.core.model import ActivationRecord


@dataclass(frozen=True)
class Puzzle:
    """A ground-truth explanation, sentences with activations that follow it, and false
    explanations."""

    name: str
    explanation: str
    activation_records: list[ActivationRecord]
    false_explanations: list[str]


def convert_puzzle_to_tokenized_sentences(puzzle: Puzzle) -> list[list[str]]:
    """The puzzle's sentences as token lists."""
    return [record.tokens for record in puzzle.activation_records]


def convert_puzzle_dict_to_puzzle(puzzle_dict: dict[str, Any]) -> Puzzle:
    """A puzzle from its JSON form: a token is a string (activation 0) or [token, activation]."""
    records = []
    for sentence in puzzle_dict["sentences"]:
        tokens = [t[0] if isinstance(t, list) else t for t in sentence]
        if not all(isinstance(t, str) for t in tokens):
            raise ValueError("All tokens must be strings")
        activations = [float(t[1]) if isinstance(t, list) else 0.0 for t in sentence]
        records.append(ActivationRecord(tokens=tokens, activations=activations))
    return Puzzle(
        name=puzzle_dict["name"],
        explanation=puzzle_dict["explanation"],
        activation_records=records,
        false_explanations=list(puzzle_dict["false_explanations"]),
    )


PUZZLES_BY_NAME: dict[str, Puzzle] = {
    name: convert_puzzle_dict_to_puzzle(value)
    for name, value in json.loads(resources.read_text("few_shot", "puzzles.json")).items()
}
