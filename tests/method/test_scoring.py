"""Scores against hand-computed values; undefined scores are None."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from neuron_desk.core.model import ActivationRecord, ActivationScale, SequenceSimulation
from neuron_desk.method import (
    LinearCalibratedNeuronSimulator,
    NeuronSimulator,
    PercentileMatchingCalibratedNeuronSimulator,
    UncalibratedNeuronSimulator,
    absolute_dev_explained_score_from_sequences,
    correlation_score,
    rsquared_score_from_sequences,
    simulate_and_score,
)
from neuron_desk.method.scoring import score_sequence


def simulation(values: Sequence[float], missing: Sequence[int] = ()) -> SequenceSimulation:
    return SequenceSimulation(
        tokens=[str(i) for i in range(len(values))],
        expected_activations=list(values),
        activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        distribution_values=[[] for _ in values],
        distribution_probabilities=[[] for _ in values],
        method="test",
        model="table",
        missing_positions=list(missing),
    )


class TableSimulator(NeuronSimulator):
    """Answers from a table: tokens joined -> expected values."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        sim = simulation(self.table["".join(tokens)])
        sim.tokens = list(tokens)
        return sim


def test_hand_computed_scores() -> None:
    real = [0.0, 1.0, 2.0, 3.0]
    predicted = [0.0, 2.0, 2.0, 4.0]
    # means 1.5 and 2.0; deviations (-1.5,-.5,.5,1.5) and (-2,0,0,2): cov 6, var 5 and 8.
    assert correlation_score(real, predicted) == pytest.approx(6 / math.sqrt(5 * 8))
    # 1 - mean((0,1,0,1)) / mean((0,1,4,9)) = 1 - 0.5/3.5
    assert rsquared_score_from_sequences(real, predicted) == pytest.approx(1 - 0.5 / 3.5)
    # 1 - mean(|(0,1,0,1)|) / mean((0,1,2,3)) = 1 - 0.5/1.5
    assert absolute_dev_explained_score_from_sequences(real, predicted) == pytest.approx(
        1 - 0.5 / 1.5
    )


def test_constant_simulation_has_no_score() -> None:
    assert correlation_score([0.0, 1.0, 2.0], [3.0, 3.0, 3.0]) is None
    assert correlation_score([1.0, 1.0], [0.0, 2.0]) is None
    assert correlation_score([1.0], [1.0]) is None
    assert rsquared_score_from_sequences([0.0, 0.0], [1.0, 2.0]) is None
    assert absolute_dev_explained_score_from_sequences([], []) is None


def test_aggregate_is_over_all_tokens_not_a_mean_of_sequences() -> None:
    records = [
        ActivationRecord(tokens=["a", "b"], activations=[0.0, 1.0]),
        ActivationRecord(tokens=["c", "d"], activations=[5.0, 6.0]),
    ]
    simulator = TableSimulator({"ab": [1.0, 0.0], "cd": [5.0, 6.0]})
    scored = asyncio.run(simulate_and_score(simulator, records))
    per_sequence = [s.ev_correlation_score for s in scored.scored_sequence_simulations]
    assert per_sequence == [pytest.approx(-1.0), pytest.approx(1.0)]
    assert scored.ev_correlation_score == pytest.approx(
        correlation_score([0, 1, 5, 6], [1, 0, 5, 6])
    )
    assert scored.method == "test" and scored.model == "table"


def test_missing_positions_are_left_out_of_scores() -> None:
    record = ActivationRecord(tokens=list("abcd"), activations=[0.0, 1.0, 2.0, 9.0])
    scored = score_sequence(record, simulation([0.0, 1.0, 2.0, 0.0], missing=[3]))
    assert scored.ev_correlation_score == pytest.approx(1.0)


def test_linear_calibration_keeps_correlation_and_maps_scale() -> None:
    records = [ActivationRecord(tokens=["x", "y", "z"], activations=[0.0, 2.0, 4.0])]
    table = {"xyz": [0.0, 5.0, 10.0]}
    linear = LinearCalibratedNeuronSimulator(TableSimulator(table))
    asyncio.run(linear.calibrate(records))
    calibrated = asyncio.run(linear.simulate(["x", "y", "z"]))
    assert calibrated.expected_activations == pytest.approx([0.0, 2.0, 4.0])
    assert calibrated.activation_scale == ActivationScale.NEURON_ACTIVATIONS
    assert calibrated.uncalibrated_simulation is not None
    percentile = PercentileMatchingCalibratedNeuronSimulator(TableSimulator(table))
    asyncio.run(percentile.calibrate(records))
    assert percentile.apply_calibration([2.5]) == pytest.approx([1.0])
    uncalibrated = UncalibratedNeuronSimulator(TableSimulator(table))
    assert asyncio.run(uncalibrated.simulate(["x", "y", "z"])).expected_activations == [
        0.0,
        5.0,
        10.0,
    ]


def test_calibration_must_come_first() -> None:
    with pytest.raises(ValueError, match="calibrate"):
        LinearCalibratedNeuronSimulator(TableSimulator({})).apply_calibration([1.0])
