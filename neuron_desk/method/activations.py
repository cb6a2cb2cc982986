"""Normalizing activations to 0..10 and writing them into prompts (the paper's format)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from neuron_desk.core.model import ActivationRecord

UNKNOWN_ACTIVATION_STRING = "unknown"
MAX_NORMALIZED_ACTIVATION = 10


def relu(x: float) -> float:
    """max(0, x): negative activations count as the neuron at rest."""
    return max(0.0, x)


def calculate_max_activation(activation_records: Sequence[ActivationRecord]) -> float:
    """The largest non-negative activation over all records (0.0 if none is positive)."""
    return max((relu(x) for record in activation_records for x in record.activations), default=0.0)


def normalize_activations(activation_record: Sequence[float], max_activation: float) -> list[int]:
    """floor(10 * relu(a) / max), clipped to 0..10; all zeros when max <= 0 or is NaN."""
    if not max_activation > 0:
        return [0 for _ in activation_record]
    return [
        0
        if math.isnan(x)
        else min(MAX_NORMALIZED_ACTIVATION, math.floor(10 * relu(x) / max_activation))
        for x in activation_record
    ]


def _format_activation_record(
    record: ActivationRecord,
    max_activation: float,
    omit_zeros: bool,
    hide_activations: bool = False,
    start_index: int = 0,
) -> str:
    tokens = list(record.tokens)
    normalized = normalize_activations(record.activations, max_activation)
    if omit_zeros:
        if hide_activations or start_index != 0:
            raise ValueError("can't hide activations and omit zeros at once")
        tokens = [t for t, a in zip(tokens, normalized, strict=True) if a > 0]
        normalized = [a for a in normalized if a > 0]
    lines = []
    for index, (token, activation) in enumerate(zip(tokens, normalized, strict=True)):
        shown = (
            UNKNOWN_ACTIVATION_STRING
            if hide_activations or index < start_index
            else str(activation)
        )
        lines.append(f"{token}\t{shown}")
    return "\n".join(lines)


def format_activation_records(
    activation_records: Sequence[ActivationRecord],
    max_activation: float,
    *,
    omit_zeros: bool = False,
    start_indices: list[int] | None = None,
    hide_activations: bool = False,
) -> str:
    """Records as `token<TAB>activation` lines, each record between <start> and <end>."""
    bodies = [
        _format_activation_record(
            record,
            max_activation,
            omit_zeros=omit_zeros,
            hide_activations=hide_activations,
            start_index=0 if start_indices is None else start_indices[i],
        )
        for i, record in enumerate(activation_records)
    ]
    return "\n<start>\n" + "\n<end>\n<start>\n".join(bodies) + "\n<end>\n"


def format_sequences_for_simulation(all_tokens: Sequence[Sequence[str]]) -> str:
    """Token sequences as `token<TAB>unknown` lines, each between <start> and <end>."""
    bodies = [
        "\n".join(f"{t}\t{UNKNOWN_ACTIVATION_STRING}" for t in tokens) for tokens in all_tokens
    ]
    return "\n<start>\n" + "\n<end>\n<start>\n".join(bodies) + "\n<end>\n"


def non_zero_activation_proportion(
    activation_records: Sequence[ActivationRecord], max_activation: float
) -> float:
    """The share of tokens whose normalized activation is above 0."""
    total = sum(len(r.activations) for r in activation_records)
    if total == 0:
        return 0.0
    non_zero = sum(
        sum(1 for a in normalize_activations(r.activations, max_activation) if a != 0)
        for r in activation_records
    )
    return non_zero / total
