"""From one neuron's activations on every corpus sequence to its files (pure numpy).

Everything here works on a neuron's full activation matrix (n_sequences, seq_len), so it is
exact; the builder streams the corpus to disk first and reads back one layer at a time.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neuron_desk.core.model import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    TokenLookupTableSummaryOfNeuron,
)

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int32]

QUANTILES = (0.5, 0.9, 0.99, 0.999)
"""Quantiles of the per-sequence maximum that bound the `random_sample_by_quantile` bands."""


@dataclass(frozen=True)
class RecordOptions:
    """How many records of each sort to keep, and how to write the numbers."""

    n_top: int = 50
    n_random: int = 50
    n_per_quantile: int = 20
    n_top_tokens: int = 50
    min_token_count: int = 5
    significant_digits: int | None = None
    """Round activations to this many significant digits of the neuron's maximum (smaller
    files); None keeps float32 precision."""


@dataclass(frozen=True)
class Moments:
    """Mean, variance, skewness and excess kurtosis of a neuron's activations."""

    mean: float
    variance: float
    skewness: float
    kurtosis: float


def moments(values: npt.NDArray[np.floating]) -> Moments:
    """Population moments over all values (float64); kurtosis is excess (Fisher)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    mean = float(data.mean())
    centred = data - mean
    variance = float(np.mean(centred**2))
    if variance <= 0.0:
        return Moments(mean, variance, math.nan, math.nan)
    skewness = float(np.mean(centred**3)) / variance**1.5
    kurtosis = float(np.mean(centred**4)) / variance**2 - 3.0
    return Moments(mean, variance, skewness, kurtosis)


def moments_from_sums(
    count: int, sums: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Variance and excess kurtosis of many neurons from raw power sums (4, n_neurons).

    Used to rank neurons during a streaming pass; NaN where the variance is zero.
    """
    m1, m2, m3, m4 = (sums[k] / count for k in range(4))
    variance = m2 - m1**2
    central4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
    with np.errstate(divide="ignore", invalid="ignore"):
        kurtosis = np.where(variance > 0, central4 / variance**2 - 3.0, np.nan)
    return variance, kurtosis


def power_sums(activations: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Sums of a, a², a³, a⁴ over all but the last axis: shape (4, n_neurons)."""
    flat = activations.reshape(-1, activations.shape[-1]).astype(np.float64)
    square = flat * flat
    return np.stack([flat.sum(0), square.sum(0), (square * flat).sum(0), (square * square).sum(0)])


def decimals_for(scale: float, significant_digits: int | None) -> int | None:
    """Decimal places that keep `significant_digits` of `scale` (None: no rounding)."""
    if significant_digits is None or not math.isfinite(scale) or scale <= 0:
        return None
    return significant_digits - 1 - math.floor(math.log10(scale))


def short_float(value: float | np.floating) -> float:
    """The float32 value of `value` as the Python float with the shortest decimal form."""
    return float(np.format_float_positional(np.float32(value), unique=True)) + 0.0


def to_numbers(values: npt.NDArray[np.float32], decimals: int | None) -> list[float]:
    """Python floats for JSON: rounded to `decimals`, or float32's shortest form."""
    if decimals is None:
        return [short_float(v) for v in values]
    return [round(float(v), decimals) + 0.0 for v in values]


@dataclass(frozen=True)
class RecordChoice:
    """Which sequences go into a neuron's record, by index into the corpus sample."""

    top: list[int]
    random: list[int]
    by_quantile: list[list[int]]
    boundaries: list[float]


def choose_sequences(
    seq_max: npt.NDArray[np.float32], options: RecordOptions, rng: np.random.Generator
) -> RecordChoice:
    """Top sequences by maximum activation, a random sample, and random samples per band.

    The bands are [0, 0.5), [0.5, 0.9), [0.9, 0.99), [0.99, 0.999), [0.999, 1] in quantiles of
    the per-sequence maximum; a band with fewer sequences than asked gives all it has.
    """
    n = len(seq_max)
    order = np.argsort(-seq_max, kind="stable")
    top = [int(i) for i in order[: options.n_top]]
    random = [int(i) for i in rng.choice(n, size=min(options.n_random, n), replace=False)]
    boundaries = [float(q) for q in np.quantile(seq_max.astype(np.float64), QUANTILES)]
    edges = [-math.inf, *boundaries, math.inf]
    by_quantile: list[list[int]] = []
    for low, high in itertools.pairwise(edges):
        members = np.flatnonzero((seq_max >= low) & (seq_max < high))
        size = min(options.n_per_quantile, len(members))
        picked = rng.choice(members, size=size, replace=False) if size else members[:0]
        by_quantile.append([int(i) for i in picked])
    return RecordChoice(top, random, by_quantile, boundaries)


def neuron_record(
    neuron: NeuronId,
    activations: FloatArray,
    sequences: IdArray,
    vocab: Sequence[str],
    options: RecordOptions,
    seed: int,
) -> NeuronRecord:
    """The NeuronRecord of a neuron from its activations (n_sequences, seq_len)."""
    rng = np.random.default_rng([seed, neuron.layer_index, neuron.neuron_index])
    seq_max = activations.max(axis=1)
    choice = choose_sequences(seq_max, options, rng)
    stats = moments(activations)
    scale = float(seq_max.max())
    if scale <= 0:
        scale = float(np.abs(activations).max())
    decimals = decimals_for(scale, options.significant_digits)

    def record(index: int) -> ActivationRecord:
        return ActivationRecord(
            tokens=[vocab[t] for t in sequences[index]],
            activations=to_numbers(activations[index], decimals),
        )

    return NeuronRecord(
        neuron_id=neuron,
        random_sample=[record(i) for i in choice.random],
        random_sample_by_quantile=[[record(i) for i in band] for band in choice.by_quantile],
        quantile_boundaries=[None, *choice.boundaries, None],
        mean=stats.mean,
        variance=stats.variance,
        skewness=stats.skewness,
        kurtosis=stats.kurtosis,
        most_positive_activation_records=[record(i) for i in choice.top],
    )


def token_table(
    activations: FloatArray,
    sequences: IdArray,
    vocab: Sequence[str],
    options: RecordOptions,
) -> TokenLookupTableSummaryOfNeuron:
    """Tokens with the highest mean activation, among those seen `min_token_count` times
    (not those on which the unit is exactly 0 every time: a sparse latent lists fewer)."""
    ids = sequences.ravel()
    size = max(len(vocab), int(ids.max()) + 1)
    counts = np.bincount(ids, minlength=size)
    sums = np.bincount(ids, weights=activations.ravel().astype(np.float64), minlength=size)
    # seen often enough, and the unit was not exactly 0 on every occurrence (a sparse latent)
    eligible = np.flatnonzero((counts >= options.min_token_count) & (sums != 0))
    means = sums[eligible] / counts[eligible]
    best = eligible[np.argsort(-means, kind="stable")[: options.n_top_tokens]]
    averages = sums[best] / counts[best]
    return TokenLookupTableSummaryOfNeuron(
        tokens=[vocab[int(t)] for t in best],
        average_activations=[short_float(a) for a in averages],
    )


def top_token_summary(record: NeuronRecord, n: int = 3) -> str:
    """A short description: the tokens where the top records peak, most frequent first."""
    peaks = Counter(
        r.tokens[int(np.argmax(r.activations))]
        for r in record.most_positive_activation_records
        if r.activations and max(r.activations) > 0
    )
    if not peaks:
        return ""
    total = sum(peaks.values())
    parts = [f"{token!r} ({count}/{total})" for token, count in peaks.most_common(n)]
    return "peaks on " + ", ".join(parts)


DENSE_FRACTION = 0.1
"""A unit firing (> 0) on more than this fraction of the corpus tokens is dense."""


@dataclass
class UnitStats:
    """Counts over the whole corpus for one layer of units, accumulated batch by batch.

    `firing[i]`: tokens on which unit i was positive. For a dictionary also its reconstruction:
    the summed squared error, and the sums of the target and of its squares (for the variance).
    """

    n_units: int
    tokens: int = 0
    firing: npt.NDArray[np.int64] | None = None
    squared_error: float = 0.0
    target_sum: npt.NDArray[np.float64] | None = None
    target_squares: float = 0.0

    def add_firing(self, values: FloatArray) -> None:
        """Count the positive units of activations (..., n_units)."""
        flat = values.reshape(-1, values.shape[-1])
        if self.firing is None:
            self.firing = np.zeros(self.n_units, dtype=np.int64)
        self.firing += np.count_nonzero(flat > 0, axis=0)
        self.tokens += len(flat)

    def add_reconstruction(self, target: FloatArray, prediction: FloatArray) -> None:
        """Accumulate the error of `prediction` for `target` (..., width)."""
        flat = target.reshape(-1, target.shape[-1]).astype(np.float64)
        error = flat - prediction.reshape(flat.shape)
        self.squared_error += float(np.sum(error * error))
        if self.target_sum is None:
            self.target_sum = np.zeros(flat.shape[1], dtype=np.float64)
        self.target_sum += flat.sum(axis=0)
        self.target_squares += float(np.sum(flat * flat))

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        """Arrays to save (see `from_state`)."""
        firing = self.firing if self.firing is not None else np.zeros(self.n_units, np.int64)
        target = self.target_sum if self.target_sum is not None else np.zeros(0)
        scalars = [self.tokens, self.squared_error, self.target_squares]
        return {"firing": firing, "target_sum": target, "scalars": np.array(scalars, float)}

    @classmethod
    def from_state(cls, state: dict[str, npt.NDArray[np.generic]]) -> UnitStats:
        """The stats `state()` saved."""
        firing = np.asarray(state["firing"], dtype=np.int64)
        tokens, squared_error, target_squares = (float(v) for v in state["scalars"])
        target = np.asarray(state["target_sum"], dtype=np.float64)
        return cls(
            len(firing),
            int(tokens),
            firing,
            squared_error,
            target if len(target) else None,
            target_squares,
        )

    def fraction_of_variance_unexplained(self) -> float | None:
        """Squared error over the target's total variance (sparsify's FVU), if tracked."""
        if self.target_sum is None or self.tokens == 0:
            return None
        mean = self.target_sum / self.tokens
        variance = self.target_squares - self.tokens * float(mean @ mean)
        return self.squared_error / variance if variance > 0 else None

    def report(self, dense_fraction: float = DENSE_FRACTION) -> dict[str, object]:
        """Dead units (never positive), dense ones (positive on > `dense_fraction` of the
        tokens), the mean number of positive units per token (L0) and the FVU."""
        firing = self.firing if self.firing is not None else np.zeros(self.n_units, np.int64)
        fraction = firing / max(self.tokens, 1)
        dead = np.flatnonzero(firing == 0)
        dense = np.flatnonzero(fraction > dense_fraction)
        fvu = self.fraction_of_variance_unexplained()
        return {
            "units": self.n_units,
            "tokens": self.tokens,
            "dead": len(dead),
            "dense": len(dense),
            "dead_fraction": round(len(dead) / max(self.n_units, 1), 6),
            "dense_fraction": round(len(dense) / max(self.n_units, 1), 6),
            "mean_l0": round(float(firing.sum()) / max(self.tokens, 1), 3),
            "fvu": None if fvu is None else round(fvu, 6),
            "dead_units": [int(i) for i in dead],
            "dense_units": [int(i) for i in dense],
            "firing_fraction_quantiles": {
                str(q): float(np.quantile(fraction, q)) for q in (0.1, 0.5, 0.9, 0.99)
            },
        }
