"""A synthetic neuron with a known rule, to build NeuronRecords and oracle simulators from."""

from __future__ import annotations

import random
from collections.abc import Sequence

from neuron_desk.core.model import ActivationRecord, NeuronId, NeuronRecord
from neuron_desk.method.activations import normalize_activations

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "every",
    "eager",
    "engineer",
    "tested",
    "seven",
    "experiments",
    "near",
    "the",
    "river",
    "bank",
    "and",
    "my",
    "dog",
    "ran",
    "home",
    "to",
    "eat",
    "green",
    "beans",
    "before",
    "evening",
    "fell",
    "over",
    "quiet",
    "hills",
]
MAX_ACTIVATION = 6.0


def activation(token: str) -> float:
    """The neuron fires on the letter e: 2.0 per "e", a small negative value otherwise."""
    count = token.lower().count("e")
    return min(MAX_ACTIVATION, 2.0 * count) if count else -0.05


def sequence(rng: random.Random, length: int = 64) -> list[str]:
    """A random sequence of word tokens with leading spaces, GPT-2 style."""
    return [(" " if i else "") + rng.choice(WORDS) for i in range(length)]


def record_of(tokens: list[str]) -> ActivationRecord:
    return ActivationRecord(tokens=tokens, activations=[activation(t) for t in tokens])


def neuron_record(seed: int = 0, n_top: int = 20, n_random: int = 15) -> NeuronRecord:
    """A NeuronRecord with top records (the most "e"s) and random records, as the files have."""
    rng = random.Random(seed)
    pool = [record_of(sequence(rng)) for _ in range(n_top * 3)]
    pool.sort(key=lambda r: -max(r.activations))
    return NeuronRecord(
        neuron_id=NeuronId(layer_index=3, neuron_index=7),
        random_sample=[record_of(sequence(rng)) for _ in range(n_random)],
        most_positive_activation_records=pool[:n_top],
        mean=0.5,
        variance=1.0,
        skewness=2.0,
        kurtosis=5.0,
    )


def oracle(tokens: Sequence[str]) -> list[int]:
    """The true normalized activations: what a perfect simulator predicts."""
    return normalize_activations([activation(t) for t in tokens], MAX_ACTIVATION)
