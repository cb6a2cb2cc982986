"""Splits of a NeuronRecord, exactly as the original interleaves them."""

from __future__ import annotations

import pytest

from neuron_desk.core.model import (
    ActivationRecord,
    ActivationRecordSliceParams,
    NeuronId,
    NeuronRecord,
    parse_neuron_key,
)


def numbered(n: int, prefix: str) -> list[ActivationRecord]:
    return [ActivationRecord(tokens=[f"{prefix}{i}"], activations=[float(i)]) for i in range(n)]


def names(records: list[ActivationRecord]) -> list[str]:
    return [r.tokens[0] for r in records]


def test_splits_are_interleaved() -> None:
    record = NeuronRecord(
        neuron_id=NeuronId(0, 0),
        most_positive_activation_records=numbered(50, "t"),
        random_sample=numbered(50, "r"),
    )
    params = ActivationRecordSliceParams(n_examples_per_split=5)
    assert names(record.train_activation_records(params)) == ["t0", "t4", "t8", "t12", "t16"]
    assert names(record.calibration_activation_records(params)) == [
        "t1",
        "t5",
        "t9",
        "t13",
        "t17",
        "r0",
        "r3",
        "r6",
        "r9",
        "r12",
    ]
    assert names(record.valid_activation_records(params)) == [
        "t2",
        "t6",
        "t10",
        "t14",
        "t18",
        "r1",
        "r4",
        "r7",
        "r10",
        "r13",
    ]
    assert names(record.test_activation_records(params)) == [
        "t3",
        "t7",
        "t11",
        "t15",
        "t19",
        "r2",
        "r5",
        "r8",
        "r11",
        "r14",
    ]


def test_splits_without_a_count_use_all_records_evenly() -> None:
    record = NeuronRecord(
        neuron_id=NeuronId(0, 0),
        most_positive_activation_records=numbered(50, "t"),
        random_sample=numbered(50, "r"),
    )
    params = ActivationRecordSliceParams(n_examples_per_split=None)
    assert len(record.train_activation_records(params)) == 12  # 50 // 4
    assert len(record.valid_activation_records(params)) == 12 + 16  # 50 // 3 random


def test_too_few_records_is_a_clear_error() -> None:
    record = NeuronRecord(
        neuron_id=NeuronId(2, 9), most_positive_activation_records=numbered(10, "t")
    )
    with pytest.raises(ValueError, match="neuron 2:9 has 10 records"):
        record.train_activation_records(ActivationRecordSliceParams(n_examples_per_split=5))


def test_max_activation_of_an_empty_record_is_zero() -> None:
    assert NeuronRecord(neuron_id=NeuronId(0, 0)).max_activation == 0.0


def test_neuron_keys() -> None:
    assert parse_neuron_key("12_3071") == NeuronId(12, 3071)
    with pytest.raises(ValueError):
        parse_neuron_key("12-3071")
