"""Importing files by hand: the public layout, or single files whose content says what they are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuron_desk.core.codec import parse_json
from neuron_desk.core.errors import NeuronDeskError, ReadOnlyDataset, bounded
from neuron_desk.core.model import NeuronSimulationResults
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Dataset, Kind
from neuron_desk.data.sources import read_capped
from neuron_desk.data.store import Store
from neuron_desk.data.validation import Accepted, accept, neuron_of

_LAYOUT = {
    Kind(k): re.compile(
        re.escape(k.path_template).replace(r"\{layer\}", r"(\d+)").replace(r"\{neuron\}", r"(\d+)")
        + "$"
    )
    for k in Kind
}


@dataclass
class ImportResult:
    """What an import stored, and what it rejected with the reason."""

    imported: list[tuple[Path, Kind, NeuronRef]] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    repaired: list[tuple[Path, str]] = field(default_factory=list)
    """Files stored with invalid UTF-8 or lone surrogates replaced, and what was replaced."""


def kind_of_content(value: Any) -> Kind | None:
    """The kind of file a parsed JSON value is, from its fields."""
    if not isinstance(value, dict):
        return None
    keys = set(value) - {"dataclass_name"}
    if "most_positive_activation_records" in keys or "random_sample" in keys:
        return Kind.ACTIVATIONS
    if "scored_explanations" in keys:
        return Kind.EXPLANATIONS
    if keys and keys <= {"c_fc", "c_proj"}:
        return Kind.RELATED_NEURONS
    if "average_activations" in keys:
        return Kind.TOKENS_BY_ACTIVATION
    if "input_positive" in keys:
        return Kind.TOKENS_BY_WEIGHT
    return None


def place_of_path(path: Path) -> tuple[Kind, int, int] | None:
    """Kind, layer and neuron of a path in the public layout (e.g. .../explanations/5/131.jsonl)."""
    text = path.as_posix()
    for kind, pattern in _LAYOUT.items():
        match = pattern.search(text)
        if match:
            return kind, int(match[1]), int(match[2])
    return None


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl"))
        else:
            found.append(path)
    return found


def import_paths(store: Store, dataset: Dataset, paths: list[Path]) -> ImportResult:
    """Validate and store every file; a file that fails is reported and not stored.

    A bundled dataset is read-only: nothing is imported into it.
    """
    if dataset.bundled:
        raise ReadOnlyDataset(
            f"{dataset.name} is a bundled, read-only dataset: import into another dataset "
            "(--dataset gpt2-xl, or a folder dataset you added)"
        )
    result = ImportResult()
    explanations = Explanations(store)
    for path in _files(paths):
        try:
            kind, ref, checked = _read(dataset, path)
        except (NeuronDeskError, OSError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if str(path) not in message:
                message = f"{path}: {message}"
            result.rejected.append((path, bounded(message)))
            continue
        store.put_file(ref, kind.value, checked.text, "import", checked.checked)
        if isinstance(checked.value, NeuronSimulationResults):
            explanations.index_published(ref, checked.value)
        result.imported.append((path, kind, ref))
        if checked.repaired:
            result.repaired.append((path, checked.repaired))
    return result


def _read(dataset: Dataset, path: Path) -> tuple[Kind, NeuronRef, Accepted]:
    """Kind, neuron and validated content of a file (its own neuron id, else its path's)."""
    body = read_capped(path)
    text = body.decode("utf-8", errors="replace")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    content = parse_json(first_line if path.suffix == ".jsonl" else text, str(path))
    place = place_of_path(path)
    kind = kind_of_content(content) or (place[0] if place else None)
    if kind is None:
        raise NeuronDeskError(f"{path}: not a neuron-explainer file (unknown content)")
    ref = NeuronRef(dataset.name, place[1], place[2]) if place and place[0] is kind else None
    checked = accept(kind, body, dataset=dataset, ref=ref, source=str(path))
    own = neuron_of(checked.value)
    if own is not None:
        return kind, NeuronRef(dataset.name, *own), checked
    if ref is None:
        raise NeuronDeskError(
            f"{path}: a {kind.label} file says nothing of its neuron; "
            "import it in the public layout (<kind>/<layer>/<neuron>.json)"
        )
    dataset.check(ref.layer, ref.index)
    return kind, ref, checked
