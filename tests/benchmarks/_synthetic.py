"""A GPT-2 XL-sized NeuronRecord (200 records x 64 tokens, ~240 KB of JSON) for benchmarks.

Imported by the benchmark scripts beside it (their own folder is on sys.path); not run itself.
"""

from __future__ import annotations

import random

from neuron_desk.core.model import ActivationRecord, NeuronId, NeuronRecord

WORDS = [
    " the",
    " of",
    " and",
    " neuron",
    " model",
    "ing",
    ".",
    ",",
    " language",
    " in",
    "\n",
    " a",
]


def gpt2_xl_sized_record(layer: int = 5, neuron: int = 131, seed: int = 0) -> NeuronRecord:
    """Records shaped like the public files: 50 top, 50 random, 5 quantile lists of 20."""
    rng = random.Random(seed)

    def record() -> ActivationRecord:
        tokens = [rng.choice(WORDS) for _ in range(64)]
        return ActivationRecord(tokens, [round(rng.gauss(0, 1), 4) for _ in tokens])

    return NeuronRecord(
        neuron_id=NeuronId(layer, neuron),
        random_sample=[record() for _ in range(50)],
        random_sample_by_quantile=[[record() for _ in range(20)] for _ in range(5)],
        quantile_boundaries=[None, -0.0032, 0.5005, 1.5146, 2.3789, None],
        mean=0.01,
        variance=1.0,
        skewness=0.2,
        kurtosis=3.1,
        most_positive_activation_records=[record() for _ in range(50)],
    )
