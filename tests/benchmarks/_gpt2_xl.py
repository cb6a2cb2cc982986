"""A GPT-2 XL neuron in the public files' shape and size, all five kinds, for benchmarks.

- activations (collated-activations): 20 top records, 5 quantile samples of 20, 20 random,
  64 tokens each, activations written at full float precision: about 230 KB of JSON;
- explanations: one scored explanation over 10 sequences of 64 tokens with the simulator's
  distributions and the uncalibrated simulation (as the published .jsonl files);
- related neurons: 20 upstream and 20 downstream of each sign;
- tokens by activation (50) and by weight (4 lists of 50).

Imported by the benchmark scripts beside it (their own folder is on sys.path); not run itself.
"""

from __future__ import annotations

import random

from neuron_desk.core import codec
from neuron_desk.core.model import (
    ActivationRecord,
    ActivationScale,
    NeuronConnections,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    RelatedNeurons,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Kind
from neuron_desk.data.store import Store
from neuron_desk.data.validation import accept

TOKENS = [
    " the", " of", " and", " to", " a", " in", " is", " that", " for", " it", ",", ".", "\n",
    " was", " on", " with", " as", " his", " he", " be", " at", " by", " I", " this", " had",
    " not", " are", " but", " from", " or", " have", " an", " they", " which", " one", " you",
    "ing", "ed", "'s", " (", ")", " \"", " 1", "2", " Chapter", " verse", " Genesis", " Court",
    " v", " U", ".S", " §", " é", "ción", " 日本", "—", " …", "\u00a0", "ly", " neuron",
]
LAYERS, NEURONS = 48, 6400


def _record(rng: random.Random, hot: float) -> ActivationRecord:
    tokens = [rng.choice(TOKENS) for _ in range(64)]
    activations = [rng.gauss(-0.05, 0.12) for _ in tokens]  # GELU outputs: mostly near zero
    for i in rng.sample(range(64), 3):
        activations[i] = hot * rng.uniform(0.5, 1.0)
    return ActivationRecord(tokens, activations)


def activation_record(layer: int = 5, neuron: int = 131, seed: int = 0) -> NeuronRecord:
    """The activation records of one neuron, shaped and sized as the public files."""
    rng = random.Random(seed)
    top = sorted((_record(rng, 8.0) for _ in range(20)), key=lambda r: -max(r.activations))
    return NeuronRecord(
        neuron_id=NeuronId(layer, neuron),
        random_sample=[_record(rng, 0.3) for _ in range(20)],
        random_sample_by_quantile=[[_record(rng, q) for _ in range(20)] for q in (0.1, 0.5, 1.5, 3, 5)],
        quantile_boundaries=[0.0, 0.0012, 0.0431, 0.6522, 1.9817, 8.0],
        mean=rng.gauss(0, 0.01),
        variance=rng.uniform(0.01, 0.1),
        skewness=rng.uniform(2, 20),
        kurtosis=rng.uniform(50, 900),
        most_positive_activation_records=top,
    )


def _simulation(rng: random.Random, tokens: list[str], uncalibrated: bool) -> SequenceSimulation:
    values = [[float(v) for v in range(11)] for _ in tokens]
    probabilities = [[rng.random() / 11 for _ in range(11)] for _ in tokens]
    return SequenceSimulation(
        tokens=tokens,
        expected_activations=[rng.uniform(0, 10) for _ in tokens],
        activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
        if uncalibrated
        else ActivationScale.NEURON_ACTIVATIONS,
        distribution_values=values,
        distribution_probabilities=probabilities,
        uncalibrated_simulation=None if uncalibrated else _simulation(rng, tokens, True),
    )


def explanations(layer: int = 5, neuron: int = 131, seed: int = 0) -> NeuronSimulationResults:
    """A neuron's published explanation with its scored simulation."""
    rng = random.Random(seed + 1)
    sequences = []
    for _ in range(10):
        record = _record(rng, 8.0)
        sequences.append(
            ScoredSequenceSimulation(
                simulation=_simulation(rng, record.tokens, False),
                true_activations=record.activations,
                ev_correlation_score=rng.uniform(-0.2, 0.9),
                rsquared_score=rng.uniform(-1, 0.8),
                absolute_dev_explained_score=rng.uniform(-1, 0.5),
            )
        )
    scored = ScoredSimulation(sequences, 0.42, 0.1, 0.05)
    return NeuronSimulationResults(
        NeuronId(layer, neuron), [ScoredExplanation("citations of biblical verses", scored)]
    )


def _connections(rng: random.Random, layer: int) -> NeuronConnections:
    def keys() -> list[str]:
        return [f"{rng.randrange(LAYERS)}_{rng.randrange(NEURONS)}" for _ in range(20)]

    return NeuronConnections(
        top_positive_neurons=keys(),
        top_negative_neurons=keys(),
        top_positive_weights=sorted((rng.uniform(0.05, 0.5) for _ in range(20)), reverse=True),
        top_negative_weights=sorted(-rng.uniform(0.05, 0.5) for _ in range(20)),
    )


def related(layer: int = 5, seed: int = 0) -> RelatedNeurons:
    """Weight-based related neurons: 20 per sign upstream (c_fc) and downstream (c_proj)."""
    rng = random.Random(seed + 2)
    return RelatedNeurons(c_fc=_connections(rng, layer), c_proj=_connections(rng, layer))


def _weights(rng: random.Random, sign: float) -> TokensAndWeights:
    return TokensAndWeights(
        [rng.choice(TOKENS) for _ in range(50)],
        sorted((sign * rng.uniform(0.1, 1.0) for _ in range(50)), key=abs, reverse=True),
    )


def tokens_by_activation(seed: int = 0) -> TokenLookupTableSummaryOfNeuron:
    rng = random.Random(seed + 3)
    return TokenLookupTableSummaryOfNeuron(
        [rng.choice(TOKENS) for _ in range(50)], sorted((rng.uniform(0, 5) for _ in range(50)), reverse=True)
    )


def tokens_by_weight(seed: int = 0) -> WeightBasedSummaryOfNeuron:
    rng = random.Random(seed + 4)
    return WeightBasedSummaryOfNeuron(
        _weights(rng, 1), _weights(rng, -1), _weights(rng, 1), _weights(rng, -1)
    )


def neuron_files(layer: int = 5, neuron: int = 131, seed: int = 0) -> dict[Kind, str]:
    """Every kind's file text, as the public dataset serves it (explanations: one JSON line)."""
    return {
        Kind.ACTIVATIONS: codec.dumps(activation_record(layer, neuron, seed)),
        Kind.EXPLANATIONS: codec.dumps(explanations(layer, neuron, seed)) + "\n",
        Kind.RELATED_NEURONS: codec.dumps(related(layer, seed)),
        Kind.TOKENS_BY_ACTIVATION: codec.dumps(tokens_by_activation(seed)),
        Kind.TOKENS_BY_WEIGHT: codec.dumps(tokens_by_weight(seed)),
    }


def store_as_fetched(
    store: Store, dataset: Dataset, ref: NeuronRef, files: dict[Kind, str]
) -> None:
    """Store a neuron's files as a fetch stores them: each accepted at the border, then kept
    with the rules' version that accepted it (so it is read back as the app reads it)."""
    for kind, text in files.items():
        checked = accept(kind, text.encode(), dataset=dataset, ref=ref, source="benchmark")
        assert checked.checked, f"the {kind.value} file is not exact"
        store.put_file(ref, kind.value, checked.text, "network", checked.checked)
