"""Normalization and formatting of activations, edge cases included."""

from __future__ import annotations

from neuron_desk.core.model import ActivationRecord
from neuron_desk.method import (
    calculate_max_activation,
    format_activation_records,
    format_sequences_for_simulation,
    non_zero_activation_proportion,
    normalize_activations,
)


def test_normalization_floors_and_clips() -> None:
    assert normalize_activations([0.0, 0.099, 0.1, 0.55, 1.0, 1.7, -3.0], 1.0) == [
        0,
        0,
        1,
        5,
        10,
        10,
        0,
    ]


def test_all_negative_record_normalizes_to_zeros() -> None:
    record = ActivationRecord(tokens=["a", "b"], activations=[-1.0, -0.2])
    assert calculate_max_activation([record]) == 0.0
    assert normalize_activations(record.activations, calculate_max_activation([record])) == [0, 0]


def test_max_zero_or_nan_normalizes_to_zeros() -> None:
    assert normalize_activations([1.0, 2.0], 0.0) == [0, 0]
    assert normalize_activations([1.0, 2.0], float("nan")) == [0, 0]
    assert normalize_activations([float("nan"), 2.0], 2.0) == [0, 10]


def test_formatting_hides_and_omits() -> None:
    record = ActivationRecord(tokens=["x", "y\tz", "\n"], activations=[0.0, 2.0, 1.0])
    assert format_activation_records([record], 2.0) == "\n<start>\nx\t0\ny\tz\t10\n\n\t5\n<end>\n"
    assert (
        format_activation_records([record], 2.0, omit_zeros=True)
        == "\n<start>\ny\tz\t10\n\n\t5\n<end>\n"
    )
    assert format_activation_records([record], 2.0, start_indices=[2]) == (
        "\n<start>\nx\tunknown\ny\tz\tunknown\n\n\t5\n<end>\n"
    )
    assert format_sequences_for_simulation([["a", "b"], ["c"]]) == (
        "\n<start>\na\tunknown\nb\tunknown\n<end>\n<start>\nc\tunknown\n<end>\n"
    )


def test_non_zero_proportion() -> None:
    record = ActivationRecord(tokens=list("abcd"), activations=[0.0, 0.05, 1.0, 0.5])
    assert non_zero_activation_proportion([record], 1.0) == 0.5
    assert non_zero_activation_proportion([], 1.0) == 0.0
