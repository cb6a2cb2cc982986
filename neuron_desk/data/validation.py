"""One validation at the border: every file body that enters goes through `accept`.

Imports, folders, mirrors, the network, the builder's bundled output and copies read back from
a store are all checked here, the same way, before anything is stored or shown:

- size: a body over `MAX_FILE_BYTES`, a string over `MAX_STRING_CHARS`;
- text: invalid UTF-8 and lone surrogates are replaced by U+FFFD (and the file says so once);
- shape: the codec's typed reading (known fields, known `dataclass_name`, types);
- consistency: tokens and activations of equal length, finite numbers where a number is data
  (NaN or ±Infinity only in a record's summary statistics, a NaN score read as "no score");
- identity: a file's own `neuron_id` equals the neuron it is stored as, inside the shape.

A refused file raises `CodecError` naming the file and the field, in one bounded line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError
from neuron_desk.core.model import (
    ActivationRecord,
    NeuronConnections,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Kind
from neuron_desk.data.sources import MAX_FILE_BYTES

__all__ = ["MAX_FILE_BYTES", "MAX_STRING_CHARS", "Accepted", "accept", "neuron_of"]

MAX_STRING_CHARS = 100_000
"""The longest string accepted anywhere in a file (a token, an explanation)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_STAT_FIELDS = frozenset({"mean", "variance", "skewness", "kurtosis"})


@dataclass(frozen=True)
class Accepted:
    """A file that passed: its parsed value, the text to store, and what was repaired."""

    value: Any
    text: str
    repaired: str = ""
    """"" or, once per file, what was replaced (invalid UTF-8, lone surrogates)."""


def accept(
    kind: Kind,
    body: str | bytes,
    *,
    dataset: Dataset,
    ref: NeuronRef | None,
    source: str,
) -> Accepted:
    """Check a file body of `kind` for `ref` of `dataset`; raise CodecError if refused.

    `ref` None: the neuron is read from the file itself (an import of a lone file); it must
    still lie inside the dataset's shape.
    """
    if len(body) > MAX_FILE_BYTES:
        raise CodecError(f"larger than {MAX_FILE_BYTES:,} bytes", source=source)
    repairs: list[str] = []
    text = _text_of(body, repairs)
    payload = text
    if kind is Kind.EXPLANATIONS:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise CodecError("the explanations file is empty", source=source)
        payload = lines[0]
    value: Any = codec.from_jsonable(codec.parse_json(payload, source), kind.model_class, source)
    if _SURROGATE_ESCAPE.search(payload):
        count = _replace_surrogates(value)
        if count:
            repairs.append(f"{count} lone surrogate(s) replaced by U+FFFD")
    try:
        _check(value, type(value).__name__)
        _check_identity(value, dataset, ref)
    except CodecError as exc:
        raise CodecError(str(exc), source=source) from None
    if repairs:
        text = codec.dumps(value) + ("\n" if kind is Kind.EXPLANATIONS else "")
    return Accepted(value, text, "; ".join(repairs))


def neuron_of(value: Any) -> tuple[int, int] | None:
    """(layer, neuron) a file names for itself, if its kind carries a neuron id."""
    if isinstance(value, NeuronRecord | NeuronSimulationResults):
        return value.neuron_id.layer_index, value.neuron_id.neuron_index
    return None


def _text_of(body: str | bytes, repairs: list[str]) -> str:
    if isinstance(body, str):
        if not body.isascii() and _SURROGATE.search(body):
            repairs.append("lone surrogates replaced by U+FFFD")
            return _SURROGATE.sub("\ufffd", body)
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        repairs.append(f"invalid UTF-8 (first at byte {exc.start}) replaced by U+FFFD")
        return body.decode("utf-8", errors="replace")


def _replace_surrogates(value: Any) -> int:
    """Replace lone surrogates in every string of a model object, in place; how many strings."""
    count = 0
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if isinstance(item, str) and _SURROGATE.search(item):
                object.__setattr__(value, f.name, _SURROGATE.sub("\ufffd", item))
                count += 1
            else:
                count += _replace_surrogates(item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str) and _SURROGATE.search(item):
                value[i] = _SURROGATE.sub("\ufffd", item)
                count += 1
            else:
                count += _replace_surrogates(item)
    return count


def _check_identity(value: Any, dataset: Dataset, ref: NeuronRef | None) -> None:
    own = neuron_of(value)
    if own is None:
        return
    layer, neuron = own
    if not (0 <= layer < dataset.n_layers and 0 <= neuron < dataset.n_neurons):
        raise CodecError(
            f"the file is for {dataset.unit} {layer}:{neuron}, outside {dataset.name} "
            f"({dataset.n_layers} layers x {dataset.n_neurons} {dataset.units})",
            "neuron_id",
        )
    if ref is not None and (layer, neuron) != (ref.layer, ref.index):
        raise CodecError(
            f"the file is for {dataset.unit} {layer}:{neuron}, not {ref.short}", "neuron_id"
        )


def _finite(values: list[Any], path: str, *, nullable: bool = False) -> None:
    if not nullable:
        try:
            if math.isfinite(sum(values)):  # one pass in C; NaN and ±Infinity propagate
                return
        except TypeError:
            pass
    for i, v in enumerate(values):
        if v is None and nullable:
            continue
        if not isinstance(v, float | int) or not math.isfinite(v):
            raise CodecError(f"not a finite number: {v!r}", f"{path}[{i}]")


def _same_length(a: list[Any], b: list[Any], path: str, names: tuple[str, str]) -> None:
    if len(a) != len(b):
        raise CodecError(f"{len(a)} {names[0]} but {len(b)} {names[1]}", path)


def _strings(values: list[str], path: str) -> None:
    if max(map(len, values), default=0) <= MAX_STRING_CHARS:
        return
    for i, s in enumerate(values):
        if len(s) > MAX_STRING_CHARS:
            raise CodecError(f"a string of {len(s):,} characters", f"{path}[{i}]")


def _score(obj: Any, name: str, path: str) -> None:
    """A score may be None or a number; NaN means no score; ±Infinity is refused."""
    v = getattr(obj, name)
    if isinstance(v, float) and math.isnan(v):
        object.__setattr__(obj, name, None)
    elif isinstance(v, float) and math.isinf(v):
        raise CodecError(f"not a finite number: {v!r}", f"{path}.{name}")


def _check(value: Any, path: str) -> None:
    """Consistency of a decoded model object, recursively (the codec checked the types)."""
    if isinstance(value, ActivationRecord):
        _same_length(value.tokens, value.activations, path, ("tokens", "activations"))
        _strings(value.tokens, f"{path}.tokens")
        _finite(value.activations, f"{path}.activations")
        return
    if isinstance(value, NeuronId):
        return
    if isinstance(value, NeuronRecord):
        if value.quantile_boundaries is not None:
            _finite(value.quantile_boundaries, f"{path}.quantile_boundaries", nullable=True)
        for name in _STAT_FIELDS:
            v = getattr(value, name)
            if v is not None and not isinstance(v, float | int):  # pragma: no cover (codec)
                raise CodecError("not a number", f"{path}.{name}")
    if isinstance(value, SequenceSimulation):
        _same_length(
            value.tokens, value.expected_activations, path, ("tokens", "expected activations")
        )
        _strings(value.tokens, f"{path}.tokens")
        _finite(value.expected_activations, f"{path}.expected_activations")
    if isinstance(value, ScoredSequenceSimulation):
        _same_length(
            value.simulation.tokens,
            value.true_activations,
            path,
            ("simulated tokens", "true activations"),
        )
        _finite(value.true_activations, f"{path}.true_activations")
        for name in ("ev_correlation_score", "rsquared_score", "absolute_dev_explained_score"):
            _score(value, name, path)
    if isinstance(value, ScoredSimulation):
        for name in ("ev_correlation_score", "rsquared_score", "absolute_dev_explained_score"):
            _score(value, name, path)
    if isinstance(value, TokenLookupTableSummaryOfNeuron):
        _same_length(value.tokens, value.average_activations, path, ("tokens", "activations"))
        _strings(value.tokens, f"{path}.tokens")
        _finite(value.average_activations, f"{path}.average_activations", nullable=True)
        return
    if isinstance(value, TokensAndWeights):
        _same_length(value.tokens, value.strengths, path, ("tokens", "strengths"))
        _strings(value.tokens, f"{path}.tokens")
        _finite(value.strengths, f"{path}.strengths", nullable=True)
        return
    if isinstance(value, NeuronConnections):
        _same_length(
            value.top_positive_neurons, value.top_positive_weights, path, ("neurons", "weights")
        )
        _same_length(
            value.top_negative_neurons, value.top_negative_weights, path, ("neurons", "weights")
        )
        _finite(value.top_positive_weights, f"{path}.top_positive_weights", nullable=True)
        _finite(value.top_negative_weights, f"{path}.top_negative_weights", nullable=True)
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise CodecError(f"a string of {len(value):,} characters", path)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if isinstance(item, list | str) or dataclasses.is_dataclass(item):
                _check(item, f"{path}.{f.name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, list | str) or dataclasses.is_dataclass(item):
                _check(item, f"{path}[{i}]")
