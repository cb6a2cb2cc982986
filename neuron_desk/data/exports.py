"""Exports of explanations and scores that the original tooling reads back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
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


def export_generated(store: Store, dataset: str, path: str | Path) -> int:
    """Every neuron of `dataset` with generated or user explanations: one results line each.

    Provenance goes to `<path>.provenance.json`. Returns the number of neurons written.
    """
    neurons = store.neurons_with_explanations(dataset, exclude_source="published")
    provenance = []
    with open(path, "w", encoding="utf-8") as out:
        for layer, neuron in neurons:
            export = export_neuron(store, dataset, layer, neuron, None)
            out.write(codec.dumps(export.results, upstream=True) + "\n")
            provenance.append({"layer": layer, "neuron": neuron, "explanations": export.provenance})
    Path(f"{path}.provenance.json").write_text(json.dumps(provenance, indent=1), encoding="utf-8")
    return len(neurons)
