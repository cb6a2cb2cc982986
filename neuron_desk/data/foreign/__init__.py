"""Imports from other tools' outputs (Neuronpedia exports, delphi results) as latent datasets.

A reader (`neuronpedia.read_export`, `delphi.read_results`) turns the tool's files into
`ForeignLatent`s, one per latent, or `Refusal`s naming the file and the field at fault. Then
`store_import` makes the dataset: every latent's files go through `validation.accept` like any
other file, and a latent's writes (its activation records, its top tokens, its imported
explanations and scores) are inside one store transaction (with those of up to `WRITE_GROUP`
latents validated before it), so a refused or failed latent leaves nothing behind, and no
latent's data is ever filed under another's number. A copy of each accepted file
is also written in the public layout under `<home>/imports/<name>/`, the folder the dataset is
registered with (so it survives `cache clear`).

The dataset is a dictionary (`Dictionary`): its layers are the tool's hook points (Neuronpedia
sources such as "9-res-jb", delphi modules such as "layers.9"), in the order first imported;
re-importing the same files is idempotent (files replaced, imported rows replaced), and an import
of new hook points under the same name appends layers without renumbering the old ones.

Imported explanations are stored as rows with `source` "imported from <tool>" and provenance
naming the tool, the file and the tool's own fields; scores are second opinions (provenance
`scorer`, `metrics`), never simulation scores.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError, NeuronDeskError, UnknownDataset, bounded
from neuron_desk.core.model import NeuronId, NeuronRecord, WeightBasedSummaryOfNeuron
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Dictionary, Kind, Registry
from neuron_desk.data.store import Store, compress
from neuron_desk.data.validation import MAX_STRING_CHARS, Accepted, accept

UNKNOWN = "unknown"
"""An architecture (or tokenizer) an export does not say."""

WRITE_GROUP = 64
"""Latents written in one store transaction (a store failure refuses the group, whole)."""


def natural_order(name: str) -> tuple[list[int], str]:
    """Names by the numbers in them ("9-res-jb" before "10-res-jb"), then by name."""
    return [int(n) for n in re.findall(r"\d+", name)], name


@dataclass
class ForeignScore:
    """A tool's score of an explanation: a second opinion, never a simulation score."""

    scorer: str
    """neuron-desk's name for it: "detection", "fuzzing", or "neuronpedia:<type>"."""
    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    """The tool's own fields (its scorer name, file, sample count...), for provenance."""


@dataclass
class ForeignExplanation:
    """An explanation the tool made, with its own provenance and its scores."""

    text: str
    details: dict[str, Any] = field(default_factory=dict)
    scores: list[ForeignScore] = field(default_factory=list)


@dataclass
class ForeignLatent:
    """Everything an import knows of one latent."""

    hook_point: str
    index: int
    files: list[str] = field(default_factory=list)
    """The files its data came from (for messages)."""
    record: NeuronRecord | None = None
    tokens_by_weight: WeightBasedSummaryOfNeuron | None = None
    explanations: list[ForeignExplanation] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int]:
        return self.hook_point, self.index


@dataclass(frozen=True)
class Refusal:
    """A latent (or a line that names none) refused, with the one-line reason."""

    where: str
    """"<hook point> latent <n>", or the file and line when the latent can't be read."""
    reason: str


@dataclass
class ForeignExport:
    """What a reader found: the latents, the refusals, and what it learned of the dictionary."""

    tool: str
    model: str
    latents: dict[tuple[str, int], ForeignLatent] = field(default_factory=dict)
    refused: dict[str, Refusal] = field(default_factory=dict)
    hook_points: list[str] = field(default_factory=list)
    d_sae: int | None = None
    d_in: int | None = None
    architecture: str = UNKNOWN
    kind: str = "sae"
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Files a reader knows but does not import (with why)."""

    def latent(self, hook_point: str, index: int, file: str) -> ForeignLatent:
        """The latent (created on first mention), with `file` noted as one of its sources."""
        if hook_point not in self.hook_points:
            self.hook_points.append(hook_point)
        unit = self.latents.setdefault((hook_point, index), ForeignLatent(hook_point, index))
        if file not in unit.files:
            unit.files.append(file)
        return unit

    def refuse(self, hook_point: str, index: int, reason: str) -> None:
        """Refuse a latent as a whole (the first reason is kept); it is not imported."""
        where = f"{hook_point} latent {index}"
        self.refused.setdefault(where, Refusal(where, bounded(reason)))
        self.latents.pop((hook_point, index), None)

    def is_refused(self, hook_point: str, index: int) -> bool:
        return f"{hook_point} latent {index}" in self.refused

    def finish(self) -> ForeignExport:
        """Top records highest first (no reader relies on the tool's order); hook points in
        the order of the numbers in their names ("9-res-jb" before "10-res-jb")."""
        for unit in self.latents.values():
            if unit.record is not None:
                unit.record.most_positive_activation_records.sort(
                    key=lambda r: max(r.activations, default=0.0), reverse=True
                )
        self.hook_points.sort(key=natural_order)
        return self

    def refuse_line(self, where: str, reason: str) -> None:
        """Refuse a line that names no readable latent."""
        self.refused.setdefault(where, Refusal(where, bounded(reason)))


@dataclass
class ForeignImport:
    """What an import stored and refused, for the CLI and the app."""

    dataset: str
    tool: str
    imported: int = 0
    refused: list[Refusal] = field(default_factory=list)
    explanations: int = 0
    scores: int = 0
    hook_points: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, other: ForeignImport) -> None:
        """Count in another part of the same import."""
        self.imported += other.imported
        self.refused += other.refused
        self.explanations += other.explanations
        self.scores += other.scores
        self.hook_points = other.hook_points or self.hook_points
        self.notes += other.notes
        self.skipped += other.skipped

    def to_json(self) -> dict[str, Any]:
        """JSON-ready counts and reasons."""
        return {
            "dataset": self.dataset,
            "tool": self.tool,
            "imported": self.imported,
            "refused": len(self.refused),
            "refusals": [{"latent": r.where, "reason": r.reason} for r in self.refused],
            "explanations": self.explanations,
            "scores": self.scores,
            "hook_points": self.hook_points,
            "notes": self.notes,
            "skipped": self.skipped,
        }


# --- field readers: a malformed field raises CodecError naming it ---


def field_of(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`obj[name]`, which must be present and of `kind` (bool is not a number)."""
    if name not in obj:
        raise CodecError("missing", name, where)
    return check_type(obj[name], name, kind, where)


def optional_field(
    obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str
) -> Any:
    """`obj[name]` if present and not null, of `kind`; else None."""
    value = obj.get(name)
    return None if value is None else check_type(value, name, kind, where)


def check_type(value: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    numeric = any(k in (int, float) for k in kinds)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise CodecError(f"expected {expected}, got {type(value).__name__}", name, where)
    if numeric and isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"not a finite number: {value!r}", name, where)
    return value


def strings(obj: dict[str, Any], name: str, where: str, *, required: bool = True) -> list[str]:
    """A list of strings (tokens)."""
    value = field_of(obj, name, list, where) if required else obj.get(name) or []
    check_type(value, name, list, where)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise CodecError(f"expected a string, got {type(item).__name__}", f"{name}[{i}]", where)
    return value


def numbers(obj: dict[str, Any], name: str, where: str, *, required: bool = True) -> list[float]:
    """A list of finite numbers (activations, values)."""
    value = field_of(obj, name, list, where) if required else obj.get(name) or []
    check_type(value, name, list, where)
    if all(type(v) is float or type(v) is int for v in value) and math.isfinite(sum(value)):
        return [float(v) for v in value]  # the common case, checked in one pass each
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise CodecError(f"not a finite number: {item!r}", f"{name}[{i}]", where)
    return [float(v) for v in value]


def latent_index(value: Any, name: str, where: str) -> int:
    """A latent index: an int, or a string of digits (Neuronpedia stores it as text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise CodecError(f"not a latent index: {value!r}", name, where)


# --- storing ---

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> None:
    """A dataset name an import can use (it names a folder too)."""
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a dataset name: use letters, digits, '.', '_' and '-' "
            "(at most 64, starting with a letter or digit)"
        )


def imports_folder(home: Path, name: str) -> Path:
    """Where an imported dataset's files are kept in the public layout."""
    return home / "imports" / name


def store_import(
    store: Store, registry: Registry, export: ForeignExport, *, name: str, home: Path
) -> ForeignImport:
    """Validate every latent, write the accepted ones in transactions of `WRITE_GROUP`
    latents, and register (or extend) the dataset."""
    check_name(name)
    report = ForeignImport(name, export.tool)
    report.notes += export.notes
    report.skipped += export.skipped
    report.refused += export.refused.values()
    if not export.latents:
        return report
    dataset = _dataset_for(registry, export, name, home)
    report.hook_points = list(dataset_hooks(dataset))
    folder = Path(dataset.folder or "")
    units = sorted(export.latents.values(), key=lambda u: (u.hook_point, u.index))
    for start in range(0, len(units), WRITE_GROUP):
        group: list[tuple[NeuronRef, list[tuple[Kind, Accepted]], ForeignLatent]] = []
        for unit in units[start : start + WRITE_GROUP]:
            ref = NeuronRef(dataset.name, dataset_hooks(dataset).index(unit.hook_point), unit.index)
            try:
                group.append((ref, _accepted_files(dataset, ref, unit), unit))
            except NeuronDeskError as exc:  # refused by validation
                report.refused.append(Refusal(_name(unit), bounded(str(exc))))
        try:
            _write_latents(store, group, export.tool)
        except NeuronDeskError as exc:  # the store failed: the whole group was rolled back
            report.refused += [Refusal(_name(unit), bounded(str(exc))) for _, _, unit in group]
            continue
        for ref, files, unit in group:
            try:
                for kind, checked in files:
                    _write_text(folder / kind.relative_path(ref.layer, ref.index), checked.text)
            except OSError as exc:
                report.notes.append(bounded(f"{folder}: not written ({exc.strerror or exc})"))
            report.imported += 1
            report.explanations += len(unit.explanations)
            report.scores += sum(len(e.scores) for e in unit.explanations)
    if report.imported:
        registry.add(dataset)
    return report


def is_imported(dataset: Dataset) -> bool:
    """Whether `dataset` was made by an import from another tool (only some latents have data)."""
    return dataset.dictionary is not None and dataset.dictionary.source.startswith("imported from")


def dataset_hooks(dataset: Dataset) -> tuple[str, ...]:
    return dataset.dictionary.hook_points if dataset.dictionary is not None else ()


def _dataset_for(registry: Registry, export: ForeignExport, name: str, home: Path) -> Dataset:
    """The dataset to import into: new, or the same tool's earlier import extended."""
    hooks = list(export.hook_points)
    n_neurons = max([export.d_sae or 0, *(i + 1 for _, i in export.latents)], default=1)
    source = f"imported from {export.tool}"
    existing = next((d for d in registry.all() if d.name == name), None)
    if existing is not None:
        old = existing.dictionary
        if old is None or old.source != source or existing.model != export.model:
            raise UnknownDataset(
                f"a dataset named {name!r} exists and is not a {export.tool} import of "
                f"{export.model}: choose another --name"
            )
        hooks = [*old.hook_points, *(h for h in hooks if h not in old.hook_points)]
        n_neurons = max(n_neurons, existing.n_neurons)
    kinds = [Kind.ACTIVATIONS]
    if any(u.tokens_by_weight is not None for u in export.latents.values()) or (
        existing is not None and Kind.TOKENS_BY_WEIGHT in existing.kinds
    ):
        kinds.append(Kind.TOKENS_BY_WEIGHT)
    dictionary = Dictionary(
        kind=export.kind,
        architecture=export.architecture,
        d_in=export.d_in or 0,
        d_sae=n_neurons,
        hook_points=tuple(hooks),
        source=source,
    )
    return Dataset(
        name=name,
        title=f"{name} ({export.model or UNKNOWN + ' model'}, {source})",
        model=export.model,
        n_layers=len(hooks),
        n_neurons=n_neurons,
        kinds=tuple(kinds),
        tokenizer=export.model or UNKNOWN,
        folder=str(imports_folder(home, name)),
        description=f"Latents {source}: {', '.join(hooks)}",
        dictionary=dictionary,
    )


def _accepted_files(
    dataset: Dataset, ref: NeuronRef, unit: ForeignLatent
) -> list[tuple[Kind, Accepted]]:
    """The latent's files, each through `accept` (the one border), as they will be stored."""
    where = ", ".join(unit.files) or f"{unit.hook_point} latent {unit.index}"
    files: list[tuple[Kind, Accepted]] = []
    if unit.record is not None:  # the reader knows the latent's number, the layer is ours
        unit.record.neuron_id = NeuronId(ref.layer, ref.index)
    for kind, value in (
        (Kind.ACTIVATIONS, unit.record),
        (Kind.TOKENS_BY_WEIGHT, unit.tokens_by_weight),
    ):
        if value is None:
            continue
        checked = accept(kind, codec.dumps(value), dataset=dataset, ref=ref, source=where)
        files.append((kind, checked))
    for explanation in unit.explanations:
        if len(explanation.text) > MAX_STRING_CHARS:
            raise CodecError(
                f"an explanation longer than {MAX_STRING_CHARS:,} characters", "explanation", where
            )
    return files


def _write_latents(
    store: Store,
    group: list[tuple[NeuronRef, list[tuple[Kind, Accepted]], ForeignLatent]],
    tool: str,
) -> None:
    """One transaction for a group of validated latents: each one's files, and its imported
    rows replacing earlier ones (an import without explanations for a latent, e.g. of
    activation batches alone, keeps them). A failure rolls the whole group back."""
    now = time.time()
    source = f"imported from {tool}"
    with store.transaction() as db:
        for ref, files, unit in group:
            key = (ref.dataset, ref.layer, ref.index)
            for kind, checked in files:
                db.execute(
                    "INSERT OR REPLACE INTO files "
                    "(dataset, kind, layer, neuron, body, origin, fetched_at, checked) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ref.dataset,
                        kind.value,
                        ref.layer,
                        ref.index,
                        compress(checked.text),
                        "import",
                        now,
                        checked.checked,
                    ),
                )
                db.execute(
                    "DELETE FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                    (ref.dataset, kind.value, ref.layer, ref.index),
                )
            if unit.explanations:
                db.execute(
                    "DELETE FROM explanations WHERE dataset=? AND layer=? AND neuron=? "
                    "AND json_extract(provenance, '$.imported_from') = ?",
                    (*key, tool),
                )
            for text, provenance in _rows(unit, tool):
                db.execute(
                    "INSERT INTO explanations (dataset, layer, neuron, explanation, score, "
                    "source, provenance, result, created_at) "
                    "VALUES (?, ?, ?, ?, NULL, ?, ?, NULL, ?)",
                    (*key, text, source, json.dumps(codec_safe(provenance)), now),
                )


def _name(unit: ForeignLatent) -> str:
    return f"{unit.hook_point} latent {unit.index}"


def _rows(unit: ForeignLatent, tool: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """(explanation, provenance) of the latent's explanations, then of their scores."""
    base = {"imported_from": tool, "hook_point": unit.hook_point, "latent": unit.index}
    for explanation in unit.explanations:
        yield explanation.text, {**base, **explanation.details}
        for score in explanation.scores:
            metrics = {**score.metrics, "scorer": score.scorer}
            yield (
                explanation.text,
                {
                    **base,
                    **score.details,
                    "scorer": score.scorer,
                    "method": score.scorer,
                    "metrics": metrics,
                },
            )


def codec_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None (the store's provenance is strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): codec_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [codec_safe(v) for v in value]
    return value


def _write_text(path: Path, text: str) -> None:
    """Write a file whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
