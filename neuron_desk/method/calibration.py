"""Calibration: map a simulator's 0..10 predictions onto the neuron's real activation scale.

Correlation scores are unchanged by linear calibration; it matters for R² and absolute
deviation, and for using a simulation in place of the neuron.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from neuron_desk.core.model import ActivationRecord, ActivationScale, SequenceSimulation
from neuron_desk.method.simulators import NeuronSimulator

if TYPE_CHECKING:
    from sklearn.linear_model import LinearRegression

FloatArray = NDArray[np.float64]


def known_pairs(
    records: Sequence[ActivationRecord], simulations: Sequence[SequenceSimulation]
) -> tuple[FloatArray, FloatArray]:
    """True and simulated activations over all tokens, leaving out missing positions."""
    true_values: list[float] = []
    simulated: list[float] = []
    for record, simulation in zip(records, simulations, strict=True):
        missing = set(simulation.missing_positions)
        for i, (real, predicted) in enumerate(
            zip(record.activations, simulation.expected_activations, strict=True)
        ):
            if i not in missing:
                true_values.append(real)
                simulated.append(predicted)
    return np.array(true_values, dtype=float), np.array(simulated, dtype=float)


class CalibratedNeuronSimulator(NeuronSimulator):
    """Wraps a simulator and maps its predictions to the neuron's activation scale."""

    def __init__(self, uncalibrated_simulator: NeuronSimulator) -> None:
        self.uncalibrated_simulator = uncalibrated_simulator

    @classmethod
    async def create(
        cls,
        uncalibrated_simulator: NeuronSimulator,
        calibration_activation_records: Sequence[ActivationRecord],
    ) -> CalibratedNeuronSimulator:
        """Build and calibrate in one call."""
        simulator = cls(uncalibrated_simulator)
        await simulator.calibrate(calibration_activation_records)
        return simulator

    async def calibrate(self, calibration_activation_records: Sequence[ActivationRecord]) -> None:
        """Simulate the calibration records and fit the mapping."""
        simulations = await asyncio.gather(
            *(
                self.uncalibrated_simulator.simulate(r.tokens)
                for r in calibration_activation_records
            )
        )
        self.calibrate_from_simulations(calibration_activation_records, simulations)

    def calibrate_from_simulations(
        self,
        calibration_activation_records: Sequence[ActivationRecord],
        simulations: Sequence[SequenceSimulation],
    ) -> None:
        """Fit the mapping from simulations already made on the calibration records."""
        true_values, simulated = known_pairs(calibration_activation_records, simulations)
        self._calibrate_from_flattened_activations(true_values, simulated)

    @abstractmethod
    def _calibrate_from_flattened_activations(
        self, true_activations: FloatArray, uncalibrated_activations: FloatArray
    ) -> None:
        """Fit from all true and simulated values of the calibration set."""

    @abstractmethod
    def apply_calibration(self, values: Sequence[float]) -> list[float]:
        """Map simulated values to the activation scale."""

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """Simulate, then calibrate the expected values and the distributions' values."""
        raw = await self.uncalibrated_simulator.simulate(tokens)
        return SequenceSimulation(
            tokens=raw.tokens,
            expected_activations=self.apply_calibration(raw.expected_activations),
            activation_scale=ActivationScale.NEURON_ACTIVATIONS,
            distribution_values=[self.apply_calibration(v) for v in raw.distribution_values],
            distribution_probabilities=raw.distribution_probabilities,
            uncalibrated_simulation=raw,
            method=raw.method,
            model=raw.model,
            missing_positions=list(raw.missing_positions),
            value_sources=list(raw.value_sources),
        )


class UncalibratedNeuronSimulator(CalibratedNeuronSimulator):
    """Passes predictions through unchanged."""

    async def calibrate(self, calibration_activation_records: Sequence[ActivationRecord]) -> None:
        """Nothing to fit."""

    def _calibrate_from_flattened_activations(
        self, true_activations: FloatArray, uncalibrated_activations: FloatArray
    ) -> None:
        pass

    def apply_calibration(self, values: Sequence[float]) -> list[float]:
        """The values themselves."""
        return list(values)


class LinearCalibratedNeuronSimulator(CalibratedNeuronSimulator):
    """A least-squares line from simulated to true activations."""

    def __init__(self, uncalibrated_simulator: NeuronSimulator) -> None:
        super().__init__(uncalibrated_simulator)
        self._regression: LinearRegression | None = None

    def _calibrate_from_flattened_activations(
        self, true_activations: FloatArray, uncalibrated_activations: FloatArray
    ) -> None:
        from sklearn.linear_model import LinearRegression  # 1-2 s to import: only when used

        self._regression = LinearRegression()
        self._regression.fit(uncalibrated_activations.reshape(-1, 1), true_activations)

    def apply_calibration(self, values: Sequence[float]) -> list[float]:
        """The fitted line applied to each value."""
        if self._regression is None:
            raise ValueError("Must call calibrate() before apply_calibration")
        if len(values) == 0:
            return []
        predicted = self._regression.predict(np.reshape(np.array(values, dtype=float), (-1, 1)))
        return [float(x) for x in predicted]


class PercentileMatchingCalibratedNeuronSimulator(CalibratedNeuronSimulator):
    """Maps the n-th percentile of simulated values to the n-th percentile of true ones."""

    def __init__(self, uncalibrated_simulator: NeuronSimulator) -> None:
        super().__init__(uncalibrated_simulator)
        self._uncalibrated: FloatArray | None = None
        self._true: FloatArray | None = None

    def _calibrate_from_flattened_activations(
        self, true_activations: FloatArray, uncalibrated_activations: FloatArray
    ) -> None:
        self._uncalibrated = np.sort(uncalibrated_activations)
        self._true = np.sort(true_activations)

    def apply_calibration(self, values: Sequence[float]) -> list[float]:
        """Each value interpolated between the matched percentiles."""
        if self._true is None or self._uncalibrated is None:
            raise ValueError("Must call calibrate() before apply_calibration")
        if len(values) == 0:
            return []
        mapped = np.interp(np.array(values, dtype=float), self._uncalibrated, self._true)
        return [float(x) for x in mapped]
