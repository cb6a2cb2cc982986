"""The data model: the dataclasses of the public neuron-explainer files, plus our provenance.

Field names and order match the public dataset files, so the codec (`core.codec`) reads them
as they are and writes files the original tooling reads back. Fields we add beyond the original
are marked `extension=True` in their metadata; the codec leaves them out of upstream exports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

SPLITS_OF_TOP_RECORDS = ("train", "calibration", "valid", "test")
SPLITS_OF_RANDOM_RECORDS = ("calibration", "valid", "test")


def extension(default: Any = None, *, factory: Any = None) -> Any:
    """A field of ours, absent from the original dataclass: not written to upstream exports."""
    if factory is not None:
        return field(default_factory=factory, metadata={"extension": True})
    return field(default=default, metadata={"extension": True})


@dataclass
class ActivationRecord:
    """A text sequence as tokens, with the neuron's raw activation on each token."""

    tokens: list[str]
    activations: list[float]


@dataclass(frozen=True)
class NeuronId:
    """A neuron: its layer and its index in the layer, both from 0."""

    layer_index: int
    neuron_index: int


@dataclass
class ActivationRecordSliceParams:
    """How many records go in each split (None: as many as divide evenly)."""

    n_examples_per_split: int | None


def slices_for_splits(splits: tuple[str, ...], n_per_split: int) -> dict[str, slice]:
    """Equal-sized interleaved slices: split k takes records k, k+S, k+2S, ... (S splits)."""
    stride = len(splits)
    end = n_per_split * stride
    return {name: slice(index, end, stride) for index, name in enumerate(splits)}


@dataclass
class NeuronRecord:
    """A neuron's activation records (top, random, by quantile) and activation statistics."""

    neuron_id: NeuronId
    random_sample: list[ActivationRecord] = field(default_factory=list)
    random_sample_by_quantile: list[list[ActivationRecord]] | None = None
    quantile_boundaries: list[float | None] | None = None
    mean: float | None = math.nan
    variance: float | None = math.nan
    skewness: float | None = math.nan
    kurtosis: float | None = math.nan
    most_positive_activation_records: list[ActivationRecord] = field(default_factory=list)

    @property
    def max_activation(self) -> float:
        """The largest activation over the top records (0.0 when there are none)."""
        values = [
            max(r.activations) for r in self.most_positive_activation_records if r.activations
        ]
        return max(values) if values else 0.0

    def _top_slices(self, params: ActivationRecordSliceParams) -> dict[str, slice]:
        return self._slices(self.most_positive_activation_records, SPLITS_OF_TOP_RECORDS, params)

    def _random_slices(self, params: ActivationRecordSliceParams) -> dict[str, slice]:
        return self._slices(self.random_sample, SPLITS_OF_RANDOM_RECORDS, params)

    def _slices(
        self,
        records: list[ActivationRecord],
        splits: tuple[str, ...],
        params: ActivationRecordSliceParams,
    ) -> dict[str, slice]:
        n = params.n_examples_per_split
        if n is None:
            n = len(records) // len(splits)
        if len(records) < n * len(splits):
            raise ValueError(
                f"neuron {self.neuron_id.layer_index}:{self.neuron_id.neuron_index} has "
                f"{len(records)} records, fewer than {n} per split x {len(splits)} splits"
            )
        return slices_for_splits(splits, n)

    def train_activation_records(
        self, activation_record_slice_params: ActivationRecordSliceParams
    ) -> list[ActivationRecord]:
        """Top records only: what the explainer sees."""
        return self.most_positive_activation_records[
            self._top_slices(activation_record_slice_params)["train"]
        ]

    def _top_and_random(
        self, split: str, params: ActivationRecordSliceParams
    ) -> list[ActivationRecord]:
        return (
            self.most_positive_activation_records[self._top_slices(params)[split]]
            + self.random_sample[self._random_slices(params)[split]]
        )

    def calibration_activation_records(
        self, activation_record_slice_params: ActivationRecordSliceParams
    ) -> list[ActivationRecord]:
        """Top and random records 1:1, for calibrating a simulator."""
        return self._top_and_random("calibration", activation_record_slice_params)

    def valid_activation_records(
        self, activation_record_slice_params: ActivationRecordSliceParams
    ) -> list[ActivationRecord]:
        """Top and random records 1:1: what a published score was computed on."""
        return self._top_and_random("valid", activation_record_slice_params)

    def test_activation_records(
        self, activation_record_slice_params: ActivationRecordSliceParams
    ) -> list[ActivationRecord]:
        """Top and random records 1:1, held out from validation."""
        return self._top_and_random("test", activation_record_slice_params)


class ActivationScale(str, Enum):
    """The units of a simulation's expected values."""

    NEURON_ACTIVATIONS = "neuron_activations"
    SIMULATED_NORMALIZED_ACTIVATIONS = "simulated_normalized_activations"


class SimulatorMethod(str, Enum):
    """Which simulator produced a simulation (DESIGN §3, plus the logprob-free ones)."""

    PROMPT_LOGPROBS = "all_at_once_prompt_logprobs"
    ONE_AT_A_TIME = "one_at_a_time"
    CHAT_GENERATION = "all_at_once_chat_generation"
    CHAT_WRITTEN_DIGITS = "all_at_once_chat_generation_written_digits"
    """Chat generation on an endpoint without logprobs: the written digit, with certainty."""
    LOGPROB_FREE = "logprob_free_json"
    """The original's LogprobFreeExplanationTokenSimulator: sampled JSON, no logprobs."""


@dataclass
class SequenceSimulation:
    """A simulator's prediction for one sequence: expected value and distribution per token."""

    tokens: list[str]
    expected_activations: list[float]
    activation_scale: ActivationScale
    distribution_values: list[list[float]]
    distribution_probabilities: list[list[float]]
    uncalibrated_simulation: SequenceSimulation | None = None
    method: str | None = extension()
    model: str | None = extension()
    missing_positions: list[int] = extension(factory=list)
    """Token positions the simulator gave no usable prediction for (excluded from scores)."""
    value_sources: list[str] = extension(factory=list)
    """Per position, where its value came from: "distribution", "written_digit" or "missing"."""


@dataclass
class ScoredSequenceSimulation:
    """A sequence simulation with the true activations and the scores on that sequence."""

    simulation: SequenceSimulation
    true_activations: list[float]
    ev_correlation_score: float | None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None


@dataclass
class ScoredSimulation:
    """Scores over several sequences, computed on all their tokens at once."""

    scored_sequence_simulations: list[ScoredSequenceSimulation]
    ev_correlation_score: float | None = None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None
    method: str | None = extension()
    model: str | None = extension()

    def get_preferred_score(self) -> float | None:
        """The headline score (correlation); None when it is undefined."""
        return self.ev_correlation_score


@dataclass
class ScoredExplanation:
    """An explanation and the result of scoring it by simulation."""

    explanation: str
    scored_simulation: ScoredSimulation

    def get_preferred_score(self) -> float | None:
        """The headline score of the explanation; None when it is undefined."""
        return self.scored_simulation.get_preferred_score()


@dataclass
class NeuronSimulationResults:
    """All scored explanations of one neuron (the `explanations/*.jsonl` files)."""

    neuron_id: NeuronId
    scored_explanations: list[ScoredExplanation]


@dataclass
class TokensAndWeights:
    """Tokens with a strength each; a strength may be null in the public files."""

    tokens: list[str]
    strengths: list[float | None]

    def pairs(self) -> list[tuple[str, float]]:
        """(token, strength) pairs, skipping null or NaN strengths."""
        return _known_pairs(self.tokens, self.strengths)


@dataclass
class WeightBasedSummaryOfNeuron:
    """Tokens with the largest input and output weights of a neuron, both signs."""

    input_positive: TokensAndWeights
    input_negative: TokensAndWeights
    output_positive: TokensAndWeights
    output_negative: TokensAndWeights


@dataclass
class TokenLookupTableSummaryOfNeuron:
    """Tokens with the highest average activation of a neuron over a corpus, highest first."""

    tokens: list[str]
    average_activations: list[float | None]

    def pairs(self) -> list[tuple[str, float]]:
        """(token, average activation) pairs, skipping null or NaN values."""
        return _known_pairs(self.tokens, self.average_activations)


@dataclass
class NeuronConnections:
    """The most positive and negative connections of a neuron, as "layer_neuron" strings."""

    top_positive_neurons: list[str]
    top_negative_neurons: list[str]
    top_positive_weights: list[float | None]
    top_negative_weights: list[float | None]

    def positive(self) -> list[tuple[NeuronId, float]]:
        """Upstream or downstream neurons with positive weights, strongest first."""
        return _connections(self.top_positive_neurons, self.top_positive_weights)

    def negative(self) -> list[tuple[NeuronId, float]]:
        """Neurons with negative weights, strongest first."""
        return _connections(self.top_negative_neurons, self.top_negative_weights)


@dataclass
class RelatedNeurons:
    """Weight-based related neurons: c_fc holds upstream, c_proj downstream neurons."""

    c_fc: NeuronConnections | None = None
    c_proj: NeuronConnections | None = None


def parse_neuron_key(key: str) -> NeuronId:
    """Parse a "layer_neuron" string such as "12_3071" into a NeuronId."""
    layer, sep, neuron = key.partition("_")
    if not sep or not layer.isdigit() or not neuron.isdigit():
        raise ValueError(f"not a neuron key of the form layer_neuron: {key!r}")
    return NeuronId(int(layer), int(neuron))


def _is_known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _known_pairs(tokens: list[str], values: list[float | None]) -> list[tuple[str, float]]:
    return [
        (t, float(v))
        for t, v in zip(tokens, values, strict=False)
        if v is not None and _is_known(v)
    ]


def _connections(keys: list[str], weights: list[float | None]) -> list[tuple[NeuronId, float]]:
    return [
        (parse_neuron_key(k), float(w))
        for k, w in zip(keys, weights, strict=False)
        if w is not None and _is_known(w)
    ]


UPSTREAM_DATACLASSES: tuple[type, ...] = (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    SequenceSimulation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    ScoredExplanation,
    NeuronSimulationResults,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
    TokenLookupTableSummaryOfNeuron,
)
"""Dataclasses the original tooling registers by name: written with "dataclass_name"."""
