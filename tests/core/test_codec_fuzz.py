"""Fuzzing the codec: whatever the bytes, reading a file either works or raises CodecError."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError
from neuron_desk.core.model import (
    NeuronRecord,
    NeuronSimulationResults,
    RelatedNeurons,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from tests.synthetic import neuron_record

CLASSES = [
    NeuronRecord,
    NeuronSimulationResults,
    RelatedNeurons,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
]
VALID = codec.dumps(neuron_record(n_top=4, n_random=3))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(
        st.sampled_from(
            ["neuron_id", "layer_index", "neuron_index", "tokens", "activations", "dataclass_name",
             "most_positive_activation_records", "random_sample", "mean", "scored_explanations",
             "c_fc", "c_proj", "strengths", "input_positive", "x"]
        ),
        children,
        max_size=6,
    ),
    max_leaves=40,
)


def read(data: str | bytes, cls: type) -> None:
    with contextlib.suppress(CodecError):  # the only failure allowed
        codec.loads(data, cls)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, cls=st.sampled_from(CLASSES))
def test_any_json_value_reads_or_fails_clearly(value: object, cls: type) -> None:
    read(json.dumps(value), cls)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), cls=st.sampled_from(CLASSES))
def test_random_bytes_fail_clearly(data: bytes, cls: type) -> None:
    read(data, cls)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(VALID) - 1))
def test_truncated_files_fail_clearly(cut: int) -> None:
    try:
        codec.loads(VALID[:cut], NeuronRecord)
    except CodecError as exc:
        assert str(exc)
    else:  # pragma: no cover - a prefix of a JSON object is never a whole one
        raise AssertionError("a truncated file was accepted")


@settings(max_examples=100, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(VALID) - 1), char=st.sampled_from(list('{}[]",:0aN-')))
def test_corrupted_files_read_or_fail_clearly(position: int, char: str) -> None:
    read(VALID[:position] + char + VALID[position + 1 :], NeuronRecord)


def test_deep_nesting_and_huge_inputs() -> None:
    for depth in (10, 1_000, 100_000):
        read("[" * depth + "]" * depth, NeuronRecord)
        read('{"neuron_id": ' * depth + "1" + "}" * depth, NeuronRecord)
    huge_tokens = json.dumps({"tokens": ["x"] * 2_000_000, "average_activations": [1.0] * 2_000_000})
    summary = codec.loads(huge_tokens, TokenLookupTableSummaryOfNeuron)
    assert len(summary.tokens) == 2_000_000
    read('{"tokens": ["' + "a" * 10_000_000 + '"], "average_activations": [1]}', TokenLookupTableSummaryOfNeuron)
    read('{"layer_index": 1e999999, "neuron_index": 2}', NeuronRecord)
