"""Exports of explanations and scores that the original tooling reads back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.model import (
    NeuronId,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSimulation,
)
from neuron_desk.data.store import Store


@dataclass
class NeuronExport:
    """A NeuronSimulationResults, and per explanation where it came from (no secrets)."""

    results: NeuronSimulationResults
    provenance: list[dict[str, Any]]


def export_neuron(
    store: Store,
    dataset: str,
    layer: int,
    neuron: int,
    published: NeuronSimulationResults | None,
) -> NeuronExport:
    """Published explanations first, then the generated and user-written ones, oldest first."""
    scored: list[ScoredExplanation] = []
    provenance: list[dict[str, Any]] = []
    for explanation in published.scored_explanations if published else []:
        scored.append(explanation)
        provenance.append({"source": "published", "dataset": dataset})
    for row in reversed(store.explanations(dataset, layer, neuron)):
        if row.source == "published":
            continue
        stored = store.explanation_result(row.id)
        if stored is not None:
            scored.append(codec.loads(stored, ScoredExplanation, source=f"explanation {row.id}"))
        else:
            unscored = ScoredSimulation(
                scored_sequence_simulations=[], ev_correlation_score=row.score
            )
            scored.append(
                ScoredExplanation(explanation=row.explanation, scored_simulation=unscored)
            )
        provenance.append(
            {
                **row.provenance,
                "source": row.source,
                "dataset": dataset,
                "created_at": row.created_at,
                "score": row.score,
            }
        )
    return NeuronExport(NeuronSimulationResults(NeuronId(layer, neuron), scored), provenance)
