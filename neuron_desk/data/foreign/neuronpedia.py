"""Neuronpedia's exports: features with their activations and explanations, one source each.

The layout and fields, from Neuronpedia's own code (github.com/hijohnnylin/neuronpedia):

- `utils/neuronpedia-utils/neuronpedia_utils/export-data.py` writes, per model and source,
  `<model>/<source>/{model,source,sourceset,release}.jsonl` and
  `<model>/<source>/{features,activations,explanations}/batch-<N>.jsonl.gz` (1024 rows a
  batch, gzip), as published under `v1/` of the "neuronpedia-datasets" bucket
  (`apps/webapp/lib/utils/s3.ts`, read back by `apps/webapp/app/api/admin/import/route.ts`).
- Rows are the Prisma models of `apps/webapp/prisma/schema.prisma` (and the dataclasses of
  `neuronpedia_utils/db_models/`): `Neuron` (a feature: modelId, layer = the source id such as
  "9-res-jb", index as text, pos_str/pos_values, neg_str/neg_values: top logit tokens,
  frac_nonzero, maxActApprox, ...), `Activation` (modelId, layer, index, tokens, values,
  maxValue, maxValueTokenIndex, minValue, binMin/binMax/binContains, ...) and `Explanation`
  (id, modelId, layer, index, description, typeName, explanationModelName, authorId, ...).
  `Source.saelensConfig` may hold the SAELens cfg (d_sae, d_in, architecture).
- The exporter writes no explanation scores; an `Explanation` row that carries its Prisma
  relation `scores` (`ExplanationScore`: value, explanationScoreTypeName,
  explanationScoreModelName, jsonDetails) has them imported as second opinions named
  "neuronpedia:<type>" (e.g. "neuronpedia:eleuther_fuzz"), never as simulation scores.

Each latent becomes a NeuronRecord (its activations as top records, highest first; Neuronpedia
exports no random sample), top tokens by weight (output side: pos_* / neg_*), and its
explanations. Unknown fields are ignored; a malformed field refuses its latent.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.codec import parse_json
from neuron_desk.core.errors import CodecError, NeuronDeskError
from neuron_desk.core.model import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.foreign import (
    ForeignExplanation,
    ForeignExport,
    ForeignImport,
    ForeignScore,
    check_name,
    check_type,
    field_of,
    latent_index,
    natural_order,
    numbers,
    optional_field,
    store_import,
    strings,
)
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.sources import MAX_FILE_BYTES
from neuron_desk.data.store import Store

TOOL = "Neuronpedia"
KINDS = ("features", "activations", "explanations")
_BATCH = re.compile(r"^batch-(\d+)\.jsonl(\.gz)?$")


def import_export(
    store: Store,
    registry: Registry,
    paths: list[Path],
    *,
    name: str,
    home: Path,
    model: str | None = None,
) -> ForeignImport:
    """Import Neuronpedia export folders (a source, a model or the `v1` root) or batch files.

    Features and explanations (small) are read first; then each activations batch is read and
    its latents stored, so memory holds one batch's activations at a time (Neuronpedia's
    exporter puts all of a latent's activations in one batch; a latent found in a later batch
    too is merged with what was stored). Every gzip file is read through once before anything
    is stored, so a truncated download stops the import with nothing stored.
    """
    check_name(name)
    batches = _batch_files(paths)
    if not batches:
        raise CodecError(
            "no Neuronpedia export here: expected <source>/{features,activations,explanations}/"
            f"batch-N.jsonl.gz under {', '.join(map(str, paths))}"
        )
    for path, _ in batches:
        _check_whole(path)
    base = ForeignExport(TOOL, model or "")
    sources = sorted(
        dict.fromkeys(p.parent.parent for p, _ in batches), key=lambda d: natural_order(d.name)
    )
    for source_dir in sources:
        _read_metadata(base, source_dir)
    base.hook_points = [d.name for d in sources]  # the order of the layers; rows may add others
    ordered = sorted(
        batches, key=lambda b: (natural_order(b[0].parent.parent.name), _batch_order(b[0]))
    )
    for path, kind in ordered:
        if kind != "activations":
            for where, row in _rows(path, base):
                _read_row(base, kind, where, row)
    report = ForeignImport(name, TOOL)
    stored: set[tuple[str, int]] = set()
    for path, kind in ordered:
        if kind == "activations":
            part = _activations_part(store, registry, base, path, name, stored)
            part_report = store_import(store, registry, part, name=name, home=home)
            now = {key for key in part.latents if not _refused(part_report, key)}
            part_report.imported -= len(now & stored)  # merged into a latent counted before
            stored |= now
            report.add(part_report)
            del part  # before the next batch is read: one batch in memory at a time
    report.add(store_import(store, registry, base.finish(), name=name, home=home))
    return report


def _refused(report: ForeignImport, key: tuple[str, int]) -> bool:
    return any(r.where == f"{key[0]} latent {key[1]}" for r in report.refused)


def _activations_part(
    store: Store,
    registry: Registry,
    base: ForeignExport,
    path: Path,
    name: str,
    stored: set[tuple[str, int]],
) -> ForeignExport:
    """The latents of one activations batch, with their features and explanations moved over
    from `base` (and records stored by an earlier batch merged in)."""
    part = ForeignExport(
        TOOL,
        base.model,
        hook_points=list(base.hook_points),
        d_sae=base.d_sae,
        d_in=base.d_in,
        architecture=base.architecture,
        kind=base.kind,
    )
    for where, row in _rows(path, part):
        _read_row(part, "activations", where, row)
    base.model = base.model or part.model
    for where, refusal in part.refused.items():
        base.refused.setdefault(where, refusal)
    for refusal in part.refused.values():  # a latent refused here is refused whole
        hook, _, index = refusal.where.rpartition(" latent ")
        if index.isdigit():
            base.latents.pop((hook, int(index)), None)
    for key, unit in list(part.latents.items()):
        if base.is_refused(*key):
            del part.latents[key]
            continue
        known = base.latents.pop(key, None)
        if known is not None:
            unit.tokens_by_weight = known.tokens_by_weight
            unit.explanations = known.explanations
            unit.files[:0] = known.files
        if key in stored and unit.record is not None:
            earlier = _stored_record(store, registry, name, key)
            if earlier is not None:
                unit.record.most_positive_activation_records[:0] = (
                    earlier.most_positive_activation_records
                )
    part.refused = {}  # reported once, with base's
    for hook in part.hook_points:
        if hook not in base.hook_points:
            base.hook_points.append(hook)
    return part.finish()


def _stored_record(
    store: Store, registry: Registry, name: str, key: tuple[str, int]
) -> NeuronRecord | None:
    dataset = registry.get(name)
    hooks = dataset.dictionary.hook_points if dataset.dictionary is not None else ()
    stored = store.get_file(NeuronRef(name, hooks.index(key[0]), key[1]), Kind.ACTIVATIONS.value)
    return None if stored is None else codec.loads(stored.text, NeuronRecord, source="the store")


def _check_whole(path: Path) -> None:
    """Read a gzip file through (nothing kept): a truncated or corrupt one is refused now."""
    if path.suffix != ".gz":
        return
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except (OSError, EOFError) as exc:
        raise CodecError(f"cannot be read whole ({exc})", source=str(path)) from None


def _batch_order(path: Path) -> tuple[str, int]:
    match = _BATCH.match(path.name)
    return str(path.parent), int(match[1]) if match else -1


def _batch_files(paths: list[Path]) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for path in paths:
        candidates = sorted(path.rglob("batch-*.jsonl*")) if path.is_dir() else [path]
        for candidate in candidates:
            if _BATCH.match(candidate.name) and candidate.parent.name in KINDS:
                found.append((candidate, candidate.parent.name))
            elif not path.is_dir():
                raise CodecError(
                    "not a Neuronpedia batch file (<source>/features|activations|explanations/"
                    "batch-N.jsonl.gz)",
                    source=str(candidate),
                )
    return found


def _read_metadata(export: ForeignExport, source_dir: Path) -> None:
    """The dictionary's shape from `source.jsonl` (saelensConfig) and `model.jsonl`."""
    for name in ("model.jsonl", "source.jsonl"):
        path = source_dir / name
        if not path.is_file():
            continue
        try:
            rows = [row for _, row in _rows(path, export)]
        except NeuronDeskError as exc:
            export.notes.append(f"{path}: ignored ({exc})")
            continue
        for row in rows[:1]:
            if name == "model.jsonl":
                export.model = export.model or str(row.get("id") or "")
                dimension = row.get("dimension")
                if isinstance(dimension, int) and not isinstance(dimension, bool):
                    export.d_in = export.d_in or dimension
            else:
                _read_saelens_config(export, row.get("saelensConfig"), path)


def _read_saelens_config(export: ForeignExport, config: Any, path: Path) -> None:
    if isinstance(config, str) and config.strip():
        try:
            config = parse_json(config, str(path))
        except CodecError:
            return
    if not isinstance(config, dict):
        return
    for name, attribute in (("d_sae", "d_sae"), ("d_in", "d_in")):
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            setattr(export, attribute, max(getattr(export, attribute) or 0, value))
    architecture = config.get("architecture")
    if isinstance(architecture, str) and architecture:
        export.architecture = architecture
    if "transcoder" in str(config.get("hook_name", "")) or config.get("is_transcoder"):
        export.kind = "transcoder"


def _rows(path: Path, export: ForeignExport) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line, row) of a JSONL file (gzip or not); a line that is not an object is refused."""
    try:
        with (
            gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as opened,
            io.TextIOWrapper(opened, encoding="utf-8", errors="replace") as text,
        ):
            for number, line in enumerate(iter(lambda: text.readline(MAX_FILE_BYTES + 1), ""), 1):
                where = f"{path}:{number}"
                if len(line) > MAX_FILE_BYTES:
                    export.refuse_line(where, f"{where}: a line over {MAX_FILE_BYTES:,} bytes")
                    _skip_rest_of_line(text)
                    continue
                if not line.strip():
                    continue
                try:
                    row = parse_json(line, where)
                    check_type(row, "row", dict, where)
                except CodecError as exc:
                    export.refuse_line(where, str(exc))
                    continue
                yield where, row
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
        raise CodecError(f"cannot be read whole ({exc})", source=str(path)) from None


def _skip_rest_of_line(text: io.TextIOWrapper) -> None:
    while (chunk := text.readline(MAX_FILE_BYTES)) and not chunk.endswith("\n"):
        pass


def _read_row(export: ForeignExport, kind: str, where: str, row: dict[str, Any]) -> None:
    try:
        source = field_of(row, "layer", str, where)
        index = latent_index(row.get("index"), "index", where)
    except CodecError as exc:
        export.refuse_line(where, str(exc))
        return
    try:
        model = field_of(row, "modelId", str, where)
    except CodecError as exc:
        export.refuse(source, index, str(exc))
        return
    if not export.model:
        export.model = model
    if model != export.model:
        export.refuse_line(
            where, f"{where}: modelId {model!r} is not the import's model {export.model!r}"
        )
        return
    if export.is_refused(source, index):
        return
    try:
        if kind == "features":
            _feature(export, source, index, where, row)
        elif kind == "activations":
            _activation(export, source, index, where, row)
        else:
            _explanation(export, source, index, where, row)
    except CodecError as exc:
        export.refuse(source, index, str(exc))


def _feature(
    export: ForeignExport, source: str, index: int, where: str, row: dict[str, Any]
) -> None:
    positive = _tokens_and_weights(row, "pos_str", "pos_values", where)
    negative = _tokens_and_weights(row, "neg_str", "neg_values", where)
    optional_field(row, "frac_nonzero", (int, float), where)
    optional_field(row, "maxActApprox", (int, float), where)
    unit = export.latent(source, index, where)
    if positive.tokens or negative.tokens:
        empty = TokensAndWeights([], [])
        unit.tokens_by_weight = WeightBasedSummaryOfNeuron(empty, empty, positive, negative)


def _tokens_and_weights(
    row: dict[str, Any], tokens: str, values: str, where: str
) -> TokensAndWeights:
    words = strings(row, tokens, where, required=False)
    weights = numbers(row, values, where, required=False)
    if len(words) != len(weights):
        raise CodecError(f"{len(words)} {tokens} but {len(weights)} {values}", values, where)
    return TokensAndWeights(words, list(weights))


def _activation(
    export: ForeignExport, source: str, index: int, where: str, row: dict[str, Any]
) -> None:
    tokens = strings(row, "tokens", where)
    values = numbers(row, "values", where)
    if len(tokens) != len(values):
        raise CodecError(f"{len(tokens)} tokens but {len(values)} values", "values", where)
    peak = optional_field(row, "maxValueTokenIndex", int, where)
    if peak is not None and not 0 <= peak < len(tokens):
        raise CodecError(f"{peak} is outside the {len(tokens)} tokens", "maxValueTokenIndex", where)
    optional_field(row, "maxValue", (int, float), where)
    unit = export.latent(source, index, where)
    if unit.record is None:
        unit.record = NeuronRecord(
            neuron_id=NeuronId(0, index),  # the layer is set when stored, from the hook point
            mean=None,
            variance=None,
            skewness=None,
            kurtosis=None,
        )
    unit.record.most_positive_activation_records.append(ActivationRecord(tokens, values))


def _explanation(
    export: ForeignExport, source: str, index: int, where: str, row: dict[str, Any]
) -> None:
    text = field_of(row, "description", str, where)
    details: dict[str, Any] = {"file": where}
    for name, key in (
        ("typeName", "type"),
        ("explanationModelName", "model"),
        ("id", "neuronpedia_id"),
        ("authorId", "author"),
    ):
        value = optional_field(row, name, str, where)
        if value is not None:
            details[key] = value
    scores = []
    for i, score in enumerate(optional_field(row, "scores", list, where) or []):
        at = f"scores[{i}]"
        check_type(score, at, dict, where)
        value = field_of(score, "value", (int, float), where)
        type_name = field_of(score, "explanationScoreTypeName", str, where)
        score_model = optional_field(score, "explanationScoreModelName", str, where)
        scores.append(
            ForeignScore(
                f"neuronpedia:{type_name}",
                {"value": float(value), "score_model": score_model},
                {"neuronpedia_score_type": type_name, "file": where},
            )
        )
    unit = export.latent(source, index, where)
    unit.explanations.append(ForeignExplanation(text, details, scores))
