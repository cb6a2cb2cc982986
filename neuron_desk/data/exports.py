"""Exports of explanations and scores that the original tooling reads back.

An export is a `NeuronSimulationResults` (upstream fields only) and, beside it in
`<file>.provenance.json`, where each explanation came from (never a key): one entry per
explanation of the results line, in order, then one per second-opinion score (detection,
fuzzing: its `scorer` and `metrics`), which the results line leaves out. `write_export` is the
one writer of both files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import (
    PUBLISHED,
    Explanations,
    NeuronExplanation,
    neuron_explanations,
)


@dataclass
class NeuronExport:
    """A NeuronSimulationResults, and per explanation where it came from (no secrets)."""

    ref: NeuronRef
    results: NeuronSimulationResults
    provenance: list[dict[str, Any]]
    missing: str = ""
    """Why part of it could not be had (e.g. the published explanations, offline), or ""."""

    def text(self) -> str:
        """The results as one JSON line the original tooling reads."""
        return codec.dumps(self.results, upstream=True)


def export_of(ref: NeuronRef, listed: Iterable[NeuronExplanation]) -> NeuronExport:
    """The export of a neuron's listed explanations (published first, then its own)."""
    scored: list[ScoredExplanation] = []
    provenance: list[dict[str, Any]] = []
    opinions: list[dict[str, Any]] = []
    for item in listed:
        if item.provenance.get("scorer", "simulation") != "simulation":
            # A second opinion (detection, fuzzing) on an explanation: not a simulation result.
            opinions.append(
                {**item.provenance, "explanation": item.explanation, "dataset": ref.dataset}
            )
            continue
        if item.scored is not None:
            scored.append(item.scored)
        else:
            unscored = ScoredSimulation(
                scored_sequence_simulations=[], ev_correlation_score=item.score
            )
            scored.append(
                ScoredExplanation(explanation=item.explanation, scored_simulation=unscored)
            )
        if item.source == PUBLISHED:
            provenance.append({"source": PUBLISHED, "dataset": ref.dataset})
        else:
            provenance.append(
                {
                    **item.provenance,
                    "source": item.source,
                    "dataset": ref.dataset,
                    "created_at": item.created_at,
                    "score": item.score,
                }
            )
    results = NeuronSimulationResults(NeuronId(ref.layer, ref.index), scored)
    return NeuronExport(ref, results, provenance + opinions)


def write_export(export: NeuronExport, path: str | Path) -> list[Path]:
    """Write one neuron's results line and its provenance list beside it; both paths."""
    return _write([export], export.provenance, Path(path))


def write_exports(exports: Iterable[NeuronExport], path: str | Path) -> list[Path]:
    """Write one results line per neuron, and beside it one provenance entry per neuron
    ({"layer", "neuron", "explanations"}); both paths."""
    exports = list(exports)
    provenance = [
        {"layer": e.ref.layer, "neuron": e.ref.index, "explanations": e.provenance}
        for e in exports
    ]
    return _write(exports, provenance, Path(path))


def _write(exports: list[NeuronExport], provenance: Any, path: Path) -> list[Path]:
    with open(path, "w", encoding="utf-8") as out:
        for export in exports:
            out.write(export.text() + "\n")
    sidecar = path.with_name(path.name + ".provenance.json")
    sidecar.write_text(json.dumps(provenance, indent=1), encoding="utf-8")
    return [path, sidecar]


def generated_exports(explanations: Explanations, dataset: str) -> list[NeuronExport]:
    """One export per neuron of `dataset` with generated or user explanations."""
    return [
        export_of(ref, neuron_explanations(explanations, ref, None))
        for ref in explanations.neurons(dataset, published=False)
    ]
