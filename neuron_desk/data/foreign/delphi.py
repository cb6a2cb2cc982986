"""delphi's results folders: latent explanations and detection / fuzzing scores.

The layout and fields, from EleutherAI's delphi (github.com/EleutherAI/delphi):

- `delphi/__main__.py` (`run`, `process_cache`) writes under `results/<run name>/`:
  `run_config.json` (the `RunConfig` of `delphi/config.py`: model, sparse_model, hookpoints,
  explainer_model, scorers, ...), `latents/` (the activation cache, safetensors of token ids:
  not read here, it needs the model's tokenizer), `explanations/<latent>.txt` holding the
  explanation as one JSON string (`orjson.dumps(result.explanation)`) and
  `scores/<scorer>/<latent>.txt` holding `orjson.dumps(result.score)`, with "/" in the latent's
  name written "--".
- A latent's name is `Latent.__repr__` of `delphi/latents/latents.py`:
  `<module>_latent<index>`, e.g. `layers.9_latent131` or `.model.layers.9_latent131`.
- A detection or fuzz score is a JSON list of `ClassifierOutput`
  (`delphi/scorers/classifier/sample.py`): str_tokens, activations, distance, activating,
  prediction, probability, correct. Their metrics are computed as delphi's
  `delphi/log/result_analysis.py` does (`compute_confusion`, `compute_classification_metrics`:
  balanced accuracy, precision, recall, F1 over the samples with a prediction; ROC AUC from
  `probability` where present).

Each latent becomes its explanation (source "imported from delphi"), its detection and fuzzing
scores as second opinions ("detection", "fuzzing"; never simulation scores), and a NeuronRecord
made of the scored samples' tokens and activations (activating samples as top records, the
others as the random sample). Other scorers' folders (simulation, intruder, embedding, ...) are
reported as skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from neuron_desk.core.codec import parse_json
from neuron_desk.core.errors import CodecError, NeuronDeskError
from neuron_desk.core.model import ActivationRecord, NeuronId, NeuronRecord
from neuron_desk.data.foreign import (
    ForeignExplanation,
    ForeignExport,
    ForeignLatent,
    ForeignScore,
    check_type,
    field_of,
    numbers,
    optional_field,
    strings,
)
from neuron_desk.data.sources import read_capped

TOOL = "delphi"
SCORERS = {"detection": "detection", "fuzz": "fuzzing"}
"""delphi's scorer folders imported, and neuron-desk's name of each."""
_LATENT = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)$")


def read_results(folder: Path, *, model: str | None = None) -> ForeignExport:
    """Read a delphi results folder (the one holding explanations/ and scores/)."""
    if not (folder / "explanations").is_dir() and not (folder / "scores").is_dir():
        raise CodecError(
            "not a delphi results folder: it has neither explanations/ nor scores/",
            source=str(folder),
        )
    config = _run_config(folder)
    export = ForeignExport(TOOL, model or str(config.get("model") or ""))
    explainer = config.get("explainer_model")
    texts: dict[tuple[str, int], str] = {}
    for path in sorted((folder / "explanations").glob("*.txt")):
        place = _latent_of(export, path)
        if place is None:
            continue
        try:
            text = parse_json(read_capped(path), str(path))
            check_type(text, "explanation", str, str(path))
        except NeuronDeskError as exc:
            export.refuse(*place, str(exc))
            continue
        except OSError as exc:
            export.refuse(*place, f"{path}: {exc.strerror or exc}")
            continue
        details: dict[str, Any] = {"file": str(path)}
        if isinstance(explainer, str) and explainer:
            details["model"] = explainer
        export.latent(*place, str(path)).explanations.append(ForeignExplanation(text, details))
        texts[place] = text
    scores = folder / "scores"
    for scorer_dir in sorted(p for p in scores.iterdir() if p.is_dir()) if scores.is_dir() else []:
        if scorer_dir.name not in SCORERS:
            export.skipped.append(
                f"{scorer_dir}: delphi's {scorer_dir.name!r} scores are not imported "
                "(only detection and fuzz)"
            )
            continue
        for path in sorted(scorer_dir.glob("*.txt")):
            place = _latent_of(export, path)
            if place is not None and not export.is_refused(*place):
                try:
                    _read_score(export, path, scorer_dir.name, place, texts.get(place))
                except (NeuronDeskError, OSError) as exc:
                    reason = str(exc) if isinstance(exc, NeuronDeskError) else f"{path}: {exc}"
                    export.refuse(*place, reason)
    return export.finish()


def _run_config(folder: Path) -> dict[str, Any]:
    path = folder / "run_config.json"
    if not path.is_file():
        return {}
    try:
        config = parse_json(read_capped(path), str(path))
    except (NeuronDeskError, OSError):
        return {}
    return config if isinstance(config, dict) else {}


def _latent_of(export: ForeignExport, path: Path) -> tuple[str, int] | None:
    """(module, latent index) a file is named for, or None (the file is refused)."""
    match = _LATENT.match(path.stem)
    if match is None:
        export.refuse_line(str(path), f"{path}: not named <module>_latent<N>.txt")
        return None
    return match["module"].replace("--", "/"), int(match["index"])


def _read_score(
    export: ForeignExport, path: Path, scorer: str, place: tuple[str, int], text: str | None
) -> None:
    where = str(path)
    samples = parse_json(read_capped(path), where)
    check_type(samples, "samples", list, where)
    rows = [_sample(sample, f"[{i}]", where) for i, sample in enumerate(samples)]
    unit = export.latent(*place, where)
    _add_records(_record(unit, place[1]), rows)
    if text is None:
        export.notes.append(f"{path}: no explanation in explanations/ for it; score not stored")
        return
    explanation = next(e for e in unit.explanations if e.text == text)
    explanation.scores.append(
        ForeignScore(
            SCORERS[scorer],
            metrics_of(rows, SCORERS[scorer]),
            {"delphi_scorer": scorer, "file": where, "samples": len(rows)},
        )
    )


def _sample(sample: Any, at: str, where: str) -> dict[str, Any]:
    check_type(sample, at, dict, where)
    tokens = strings(sample, "str_tokens", f"{where} {at}")
    activations = numbers(sample, "activations", f"{where} {at}")
    if len(tokens) != len(activations):
        raise CodecError(
            f"{len(tokens)} str_tokens but {len(activations)} activations",
            f"{at}.activations",
            where,
        )
    located = f"{where} {at}"
    prediction = optional_field(sample, "prediction", (bool, int), located)
    return {
        "tokens": tokens,
        "activations": activations,
        "activating": field_of(sample, "activating", bool, located),
        "prediction": None if prediction is None else bool(prediction),
        "probability": optional_field(sample, "probability", (int, float), located),
        "distance": optional_field(sample, "distance", (int, float), located),
        "correct": optional_field(sample, "correct", bool, located),
    }


def _record(unit: ForeignLatent, index: int) -> NeuronRecord:
    if unit.record is None:
        unit.record = NeuronRecord(
            neuron_id=NeuronId(0, index), mean=None, variance=None, skewness=None, kurtosis=None
        )
    record: NeuronRecord = unit.record
    return record


def _add_records(record: NeuronRecord, rows: list[dict[str, Any]]) -> None:
    """The samples as activation records, each excerpt once (both scorers show the same ones)."""
    seen = {
        (tuple(r.tokens), tuple(r.activations))
        for r in record.most_positive_activation_records + record.random_sample
    }
    for row in rows:
        key = (tuple(row["tokens"]), tuple(row["activations"]))
        if key in seen:
            continue
        seen.add(key)
        target = (
            record.most_positive_activation_records if row["activating"] else record.random_sample
        )
        target.append(ActivationRecord(list(row["tokens"]), list(row["activations"])))


def metrics_of(rows: list[dict[str, Any]], scorer: str) -> dict[str, Any]:
    """delphi's classification metrics of scored samples (log/result_analysis.py), in the keys
    neuron-desk's own detection and fuzzing results use."""
    answered = [r for r in rows if r["prediction"] is not None]
    pos = sum(1 for r in answered if r["activating"])
    neg = len(answered) - pos
    tp = sum(1 for r in answered if r["prediction"] and r["activating"])
    tn = sum(1 for r in answered if not r["prediction"] and not r["activating"])
    fp = sum(1 for r in answered if r["prediction"] and not r["activating"])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    scored = [(r["probability"], r["activating"]) for r in rows if r["probability"] is not None]
    auc = _auc(scored)
    return {
        "scorer": scorer,
        "balanced_accuracy": ((tp / pos if pos else 0.0) + (tn / neg if neg else 0.0)) / 2
        if answered
        else None,
        "precision": precision if answered else None,
        "recall": recall if answered else None,
        "f1": (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        if answered
        else None,
        "auc": auc,
        "auc_source": "delphi probabilities" if auc is not None else "none",
        "n_excerpts": len(rows),
        "n_answered": len(answered),
        "n_requests": None,
        "missing_batches": None,
    }


def _auc(scored: list[tuple[float, bool]]) -> float | None:
    """ROC AUC (the Mann-Whitney statistic; ties count half); None without both classes."""
    positives = [p for p, label in scored if label]
    negatives = [p for p, label in scored if not label]
    if not positives or not negatives:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))
