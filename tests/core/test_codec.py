"""The JSON codec against the shapes of the public files, and its errors."""

from __future__ import annotations

import json
import math

import pytest

from neuron_desk.core.codec import dumps, loads, to_jsonable
from neuron_desk.core.errors import CodecError
from neuron_desk.core.model import (
    ActivationRecord,
    ActivationScale,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    RelatedNeurons,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from tests.synthetic import neuron_record

# Field names of the original dataclasses (neuron-explainer), which must read our exports.
UPSTREAM_FIELDS = {
    "SequenceSimulation": {
        "tokens",
        "expected_activations",
        "activation_scale",
        "distribution_values",
        "distribution_probabilities",
        "uncalibrated_simulation",
    },
    "ScoredSequenceSimulation": {
        "simulation",
        "true_activations",
        "ev_correlation_score",
        "rsquared_score",
        "absolute_dev_explained_score",
    },
    "ScoredSimulation": {
        "scored_sequence_simulations",
        "ev_correlation_score",
        "rsquared_score",
        "absolute_dev_explained_score",
    },
    "ScoredExplanation": {"explanation", "scored_simulation"},
    "NeuronSimulationResults": {"neuron_id", "scored_explanations"},
    "NeuronId": {"layer_index", "neuron_index"},
}


def public_style_record() -> str:
    """A NeuronRecord written as the public files are: json.dumps, dataclass_name, NaN, nulls."""
    record = {
        "dataclass_name": "NeuronRecord",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 5, "neuron_index": 131},
        "random_sample": [
            {
                "dataclass_name": "ActivationRecord",
                "tokens": ["<|endoftext|>", " a"],
                "activations": [0.0, -0.1],
            }
        ],
        "random_sample_by_quantile": [[{"tokens": ["x"], "activations": [1]}] for _ in range(5)],
        "quantile_boundaries": [None, -0.0032, 0.5005, 1.5146, 2.3789, None],
        "mean": float("nan"),
        "variance": 0.25,
        "skewness": None,
        "kurtosis": 3.5,
        "most_positive_activation_records": [
            {
                "dataclass_name": "ActivationRecord",
                "tokens": [" caf\u00e9", "\n", "\t"],
                "activations": [3.2, 0, 1],
            }
        ],
    }
    return json.dumps(record)


def test_reads_a_public_style_file() -> None:
    text = public_style_record()
    assert "NaN" in text and "\\u00e9" in text
    record = loads(text, NeuronRecord)
    assert record.neuron_id == NeuronId(5, 131)
    assert math.isnan(record.mean or 0.0) and record.skewness is None
    assert record.quantile_boundaries is not None and record.quantile_boundaries[0] is None
    assert record.most_positive_activation_records[0].tokens == [" caf\u00e9", "\n", "\t"]
    assert (
        record.random_sample_by_quantile is not None and len(record.random_sample_by_quantile) == 5
    )
    assert record.max_activation == 3.2


def test_round_trip_of_every_dataclass() -> None:
    record = neuron_record()
    assert loads(dumps(record), NeuronRecord) == record
    simulation = SequenceSimulation(
        tokens=["a", "b"],
        expected_activations=[0.5, 2.0],
        activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        distribution_values=[[0, 1], [2]],
        distribution_probabilities=[[0.5, 0.5], [1.0]],
        method="one_at_a_time",
        model="m",
        missing_positions=[1],
    )
    calibrated = SequenceSimulation(
        tokens=["a", "b"],
        expected_activations=[0.1, 0.2],
        activation_scale=ActivationScale.NEURON_ACTIVATIONS,
        distribution_values=[[], []],
        distribution_probabilities=[[], []],
        uncalibrated_simulation=simulation,
    )
    results = NeuronSimulationResults(
        neuron_id=NeuronId(1, 2),
        scored_explanations=[
            ScoredExplanation(
                explanation=" vowels",
                scored_simulation=ScoredSimulation(
                    scored_sequence_simulations=[
                        ScoredSequenceSimulation(calibrated, [0.0, 1.0], None, 0.5, None)
                    ],
                    ev_correlation_score=0.7,
                    method="one_at_a_time",
                    model="m",
                ),
            )
        ],
    )
    assert loads(dumps(results), NeuronSimulationResults) == results
    summary = TokenLookupTableSummaryOfNeuron(tokens=["a", "b"], average_activations=[1.0, None])
    assert loads(dumps(summary), TokenLookupTableSummaryOfNeuron) == summary
    assert summary.pairs() == [("a", 1.0)]


def test_files_without_dataclass_name_are_read() -> None:
    text = '{"neuron_id": {"layer_index": 0, "neuron_index": 1}, "scored_explanations": []}'
    assert loads(text, NeuronSimulationResults).neuron_id == NeuronId(0, 1)


def test_upstream_export_has_only_upstream_fields() -> None:
    simulation = SequenceSimulation(
        ["a"],
        [1.0],
        ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        [[1.0]],
        [[1.0]],
        method="m",
        model="x",
        missing_positions=[0],
    )
    results = NeuronSimulationResults(
        NeuronId(0, 0),
        [
            ScoredExplanation(
                "e",
                ScoredSimulation([ScoredSequenceSimulation(simulation, [1.0], None)], method="m"),
            )
        ],
    )

    def check(value: object) -> None:
        if isinstance(value, dict):
            name = value.get("dataclass_name")
            assert name is not None, value
            if name in UPSTREAM_FIELDS:
                assert set(value) - {"dataclass_name"} == UPSTREAM_FIELDS[name]
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    check(json.loads(dumps(results, upstream=True)))
    assert "missing_positions" in dumps(results)


def test_written_files_are_valid_json_without_nan() -> None:
    record = NeuronRecord(neuron_id=NeuronId(0, 0))  # mean etc. default to NaN
    text = dumps(record)
    assert "NaN" not in text
    assert json.loads(text)["mean"] is None
    assert text.startswith('{"dataclass_name": "NeuronRecord", "neuron_id": {')


@pytest.mark.parametrize(
    ("text", "cls", "fragment", "path"),
    [
        ('{"layer_index": 1}', NeuronId, "missing field 'neuron_index'", "NeuronId.neuron_index"),
        (
            '{"layer_index": 1, "neuron_index": 2, "bogus": 3}',
            NeuronId,
            "unknown field 'bogus'",
            "NeuronId.bogus",
        ),
        (
            '{"layer_index": "1", "neuron_index": 2}',
            NeuronId,
            "expected an integer",
            "NeuronId.layer_index",
        ),
        (
            '{"layer_index": true, "neuron_index": 2}',
            NeuronId,
            "expected an integer",
            "NeuronId.layer_index",
        ),
        (
            '{"neuron_id": {"layer_index": 0, "neuron_index": 0}, "most_positive_activation_records": [{"tokens": ["a"], "activations": [null]}]}',
            NeuronRecord,
            "expected a number, got null",
            "NeuronRecord.most_positive_activation_records[0].activations[0]",
        ),
        (
            '{"tokens": "abc", "average_activations": []}',
            TokenLookupTableSummaryOfNeuron,
            "expected a list",
            "TokenLookupTableSummaryOfNeuron.tokens",
        ),
        (
            '{"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 2}',
            ActivationRecord,
            "expected a ActivationRecord, found a NeuronId",
            "ActivationRecord",
        ),
        ("[1, 2]", NeuronId, "expected a NeuronId object, got a list", "NeuronId"),
    ],
)
def test_malformed_values_name_the_field(text: str, cls: type, fragment: str, path: str) -> None:
    with pytest.raises(CodecError) as info:
        loads(text, cls, source="collated-activations/0/0.json")
    assert fragment in str(info.value)
    assert info.value.path == path
    assert "collated-activations/0/0.json" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"a": 1,}', b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b"null", b"NaN"],
)
def test_unparseable_input_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        loads(data, NeuronRecord)


def test_related_neurons_and_weight_summary() -> None:
    related = loads(
        '{"c_fc": null, "c_proj": {"top_positive_neurons": ["12_5", "13_7"], "top_negative_neurons": [],'
        ' "top_positive_weights": [0.5, null], "top_negative_weights": []}}',
        RelatedNeurons,
    )
    assert related.c_fc is None and related.c_proj is not None
    assert related.c_proj.positive() == [(NeuronId(12, 5), 0.5)]
    empty = {"tokens": [], "strengths": []}
    summary = loads(
        json.dumps(
            {
                "dataclass_name": "WeightBasedSummaryOfNeuron",
                "input_positive": {"tokens": ["a"], "strengths": [2.0]},
                "input_negative": empty,
                "output_positive": empty,
                "output_negative": empty,
            }
        ),
        WeightBasedSummaryOfNeuron,
    )
    assert summary.input_positive.pairs() == [("a", 2.0)]
    assert to_jsonable(summary)["input_positive"]["dataclass_name"] == "TokensAndWeights"
