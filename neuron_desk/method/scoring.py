"""Scoring a simulation against the neuron's real activations.

Scores over several sequences are computed on all their tokens at once (not averaged per
sequence), as in the paper. A score that is undefined (a constant simulation, or no tokens)
is None, never a number. Positions a simulator could not predict are left out.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from neuron_desk.core.model import (
    ActivationRecord,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
)
from neuron_desk.method.calibration import known_pairs
from neuron_desk.method.simulators import NeuronSimulator

logger = logging.getLogger(__name__)

ScoreFunction = Callable[[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray], float | None]


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def correlation_score(
    real_activations: Sequence[float] | np.ndarray,
    predicted_activations: Sequence[float] | np.ndarray,
) -> float | None:
    """Pearson correlation; None if either side is constant or there are under 2 values."""
    real = np.asarray(real_activations, dtype=float)
    predicted = np.asarray(predicted_activations, dtype=float)
    if real.size < 2 or np.ptp(real) == 0 or np.ptp(predicted) == 0:
        return None
    return _finite_or_none(float(np.corrcoef(real, predicted)[0, 1]))


def rsquared_score_from_sequences(
    real_activations: Sequence[float] | np.ndarray,
    predicted_activations: Sequence[float] | np.ndarray,
) -> float | None:
    """1 - mean((real - predicted)²) / mean(real²); None when the real values are all 0."""
    real = np.asarray(real_activations, dtype=float)
    predicted = np.asarray(predicted_activations, dtype=float)
    denominator = float(np.mean(np.square(real))) if real.size else 0.0
    if denominator == 0:
        return None
    return _finite_or_none(1 - float(np.mean(np.square(real - predicted))) / denominator)


def absolute_dev_explained_score_from_sequences(
    real_activations: Sequence[float] | np.ndarray,
    predicted_activations: Sequence[float] | np.ndarray,
) -> float | None:
    """1 - mean(|real - predicted|) / mean(|real|); None when the real values are all 0."""
    real = np.asarray(real_activations, dtype=float)
    predicted = np.asarray(predicted_activations, dtype=float)
    denominator = float(np.mean(np.abs(real))) if real.size else 0.0
    if denominator == 0:
        return None
    return _finite_or_none(1 - float(np.mean(np.abs(real - predicted))) / denominator)


def score_sequence(
    record: ActivationRecord, simulation: SequenceSimulation
) -> ScoredSequenceSimulation:
    """Scores of one simulated sequence against its record."""
    if len(simulation.expected_activations) != len(record.activations):
        raise ValueError(
            f"simulation has {len(simulation.expected_activations)} values for "
            f"{len(record.activations)} tokens"
        )
    real, predicted = known_pairs([record], [simulation])
    return ScoredSequenceSimulation(
        simulation=simulation,
        true_activations=list(record.activations),
        ev_correlation_score=correlation_score(real, predicted),
        rsquared_score=rsquared_score_from_sequences(real, predicted),
        absolute_dev_explained_score=absolute_dev_explained_score_from_sequences(real, predicted),
    )


def aggregate_scored_sequence_simulations(
    scored_sequence_simulations: list[ScoredSequenceSimulation],
) -> ScoredSimulation:
    """Scores over all tokens of all sequences at once (not an average of per-sequence scores)."""
    records = [
        ActivationRecord(tokens=s.simulation.tokens, activations=s.true_activations)
        for s in scored_sequence_simulations
    ]
    real, predicted = known_pairs(records, [s.simulation for s in scored_sequence_simulations])
    methods = {s.simulation.method for s in scored_sequence_simulations}
    models = {s.simulation.model for s in scored_sequence_simulations}
    return ScoredSimulation(
        scored_sequence_simulations=scored_sequence_simulations,
        ev_correlation_score=correlation_score(real, predicted),
        rsquared_score=rsquared_score_from_sequences(real, predicted),
        absolute_dev_explained_score=absolute_dev_explained_score_from_sequences(real, predicted),
        method=methods.pop() if len(methods) == 1 else None,
        model=models.pop() if len(models) == 1 else None,
    )


async def simulate_and_score(
    simulator: NeuronSimulator, activation_records: Sequence[ActivationRecord]
) -> ScoredSimulation:
    """Simulate every record (concurrently) and score the simulations together."""

    async def one(record: ActivationRecord) -> ScoredSequenceSimulation:
        simulation = await simulator.simulate(record.tokens)
        return score_sequence(record, simulation)

    scored = await asyncio.gather(*(one(r) for r in activation_records))
    return aggregate_scored_sequence_simulations(list(scored))


async def make_simulator_and_score(
    make_simulator: Awaitable[NeuronSimulator], activation_records: Sequence[ActivationRecord]
) -> ScoredSimulation:
    """Await the simulator (e.g. while it calibrates), then score the records."""
    simulator = await make_simulator
    return await simulate_and_score(simulator, activation_records)
