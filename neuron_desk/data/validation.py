"""One validation at the border: every file body that enters goes through `accept`.

Imports, folders, mirrors, the network, the builder's bundled output and copies read back from
a store are all checked here, the same way, before anything is stored or shown (a stored copy
once: one the current rules accepted as exact is read back by `accept_stored` without its
checks, see there):

- size: a body over `MAX_FILE_BYTES`, a string over `MAX_STRING_CHARS`;
- text: invalid UTF-8 and lone surrogates are replaced by U+FFFD (and the file says so once);
- shape: the codec's typed reading (known fields, known `dataclass_name`, types);
- consistency: tokens and activations of equal length, finite numbers where a number is data
  (NaN or ±Infinity only in a record's summary statistics, a NaN score read as "no score");
- identity: a file's own `neuron_id` equals the neuron it is stored as, inside the shape.

A refused file raises `CodecError` naming the file and the field, in one bounded line.

Two paths, one verdict. The common file (orjson parses it: valid UTF-8, no NaN or Infinity, no
lone surrogates) is built straight into the model in one pass, each check done as its value is
constructed (`_fast_value`); anything that path cannot vouch for (a wrong type, an unknown field,
a length mismatch, an integer where a float goes, NaN written by Python's json) is decided by the
careful path: the codec's typed reading, then `_check`, which names the field. The fast path
accepts only what the careful one accepts, with an equal value (tests/data/test_validation_paths).
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from itertools import chain
from typing import Any, Union

import orjson

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

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_STRING_CHARS",
    "RULES_VERSION",
    "Accepted",
    "accept",
    "accept_stored",
    "neuron_of",
]

MAX_STRING_CHARS = 100_000
"""The longest string accepted anywhere in a file (a token, an explanation)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_STAT_FIELDS = frozenset({"mean", "variance", "skewness", "kurtosis"})


RULES_VERSION = 1
"""The version of the rules below. A body accepted as exact is stored with it
(`Accepted.checked`), and a stored copy that carries the current version is read back by
`accept_stored` without being checked again; raise it whenever a rule changes, and every stored
copy is checked again when it is next read."""


@dataclass(frozen=True)
class Accepted:
    """A file that passed: its parsed value, the text to store, and what was repaired."""

    value: Any
    text: str
    repaired: str = ""
    """"" or, once per file, what was replaced (invalid UTF-8, lone surrogates)."""
    checked: int = 0
    """`RULES_VERSION` if `text` read back as it is gives `value`, equal and of the same types
    (the fast path built it, nothing converted or repaired): the store keeps it with the copy;
    0 otherwise (such a copy is checked again whenever it is read)."""


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
    payload: str | None = text
    if kind is Kind.EXPLANATIONS:
        payload = _first_json_line(text)
    try:
        parsed: Any = orjson.loads(payload) if payload is not None else _UNPARSED
    except orjson.JSONDecodeError:
        parsed = _UNPARSED  # NaN, Infinity, lone surrogates, or not JSON: the careful path
    if kind is Kind.EXPLANATIONS and parsed is _UNPARSED:
        payload = _first_line(text)  # exactly as str.splitlines cuts it
        if payload is None:
            raise CodecError("the explanations file is empty", source=source)
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = _UNPARSED
    assert payload is not None
    _CONVERSIONS.count = 0
    value = _fast_value(kind, parsed)
    exact = value is not None and not _CONVERSIONS.count
    if value is None:
        value = _careful_value(kind, payload, parsed, source, repairs)
    try:
        _check_identity(value, dataset, ref)
    except CodecError as exc:
        raise CodecError(str(exc), source=source) from None
    if repairs:
        text = codec.dumps(value) + ("\n" if kind is Kind.EXPLANATIONS else "")
    return Accepted(value, text, "; ".join(repairs), RULES_VERSION if exact and not repairs else 0)


def accept_stored(
    kind: Kind,
    text: str,
    *,
    dataset: Dataset,
    ref: NeuronRef,
    source: str,
    checked: int,
) -> Accepted:
    """A copy read back from the store, stored as `ref`'s with `checked` (`Accepted.checked`).

    A copy the current rules accepted as exact is built straight into the model, its identity
    checked again and nothing else: it entered through `accept`, and the store's key and the
    zstd checksum of its body vouch that it is that text. Any other copy (older rules, a
    salvaged store, a body that no longer builds) is checked as every body is, by `accept`.
    """
    if checked == RULES_VERSION:
        value = _trusted_value(kind, text)
        if value is not None:
            try:
                _check_identity(value, dataset, ref)
            except CodecError as exc:
                raise CodecError(str(exc), source=source) from None
            return Accepted(value, text, "", RULES_VERSION)
    return accept(kind, text, dataset=dataset, ref=ref, source=source)


_RARE_BREAKS = "\r\v\f\x1c\x1d\x1e"
"""Line breaks of `str.splitlines` besides "\n" (ASCII ones; others are not ASCII)."""


def _first_line(text: str) -> str | None:
    """The first line of `text` that is not blank, as `str.splitlines` cuts them (an ASCII
    text with only "\n" breaks is cut with `find`, in C at memory speed)."""
    if text.isascii() and not any(brk in text for brk in _RARE_BREAKS):
        start = 0
        while True:
            end = text.find("\n", start)
            line = text[start:] if end < 0 else text[start:end]
            if line.strip():
                return line
            if end < 0:
                return None
            start = end + 1
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else None


def _first_json_line(text: str) -> str | None:
    """The first line of an ASCII `text` that is not blank, cut at "\n" only, if it holds no
    "\r"; None otherwise. When orjson accepts that line it is `_first_line`'s too: JSON has no
    raw \v, \f or \x1c-\x1e (control characters), the lines before it are blank however
    they are cut, and it holds no other break of `str.splitlines` (an ASCII text)."""
    if not text.isascii():
        return None
    start = 0
    while True:
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line and not line.isspace():
            return None if "\r" in line else line
        if end < 0:
            return None
        start = end + 1


_UNPARSED = object()
"""orjson refused the text (the standard library's reading decides)."""


def _careful_value(kind: Kind, payload: str, parsed: Any, source: str, repairs: list[str]) -> Any:
    """The codec's typed reading and `_check`: every refusal names its field."""
    if parsed is _UNPARSED:
        parsed = codec.parse_json(payload, source)
    value: Any = codec.from_jsonable(parsed, kind.model_class, source)
    if _SURROGATE_ESCAPE.search(payload):  # only json.loads lets a lone surrogate through
        count = _replace_surrogates(value)
        if count:
            repairs.append(f"{count} lone surrogate(s) replaced by U+FFFD")
    try:
        _check(value, type(value).__name__)
    except CodecError as exc:
        raise CodecError(str(exc), source=source) from None
    return value


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


# --- the fast path: parsed JSON straight into the model, checks folded into construction ---


class _CannotVouch(Exception):
    """The fast path cannot vouch for a value: the careful path decides (and says why)."""


class _Conversions(threading.local):
    """How many values the fast path converted (an integer where a float goes) in this
    thread's current `accept`: a body with any is not exact (`Accepted.checked`)."""

    count = 0


_CONVERSIONS = _Conversions()


Decoder = Callable[[Any], Any]

_NUMBER = frozenset({float, int})
_LIST = frozenset({list})
_INT = frozenset({int})
_FLOAT_OR_NONE = frozenset({float, type(None)})
_NUMBER_OR_NONE = frozenset({float, int, type(None)})


def _fast_value(kind: Kind, parsed: Any) -> Any:
    """The model object of a parsed file, if every check passes on the way; None otherwise.

    orjson never yields NaN, ±Infinity or lone surrogates, so the checks left are types,
    fields, lengths and string sizes; a score is never NaN here, so nothing is normalized.
    """
    if parsed is _UNPARSED:
        return None
    try:
        return _decoder(kind.model_class)(parsed)
    except (_CannotVouch, KeyError, TypeError, ValueError, OverflowError, RecursionError):
        return None


def _strings_fast(value: Any) -> list[str]:
    if type(value) is not list:
        raise _CannotVouch
    # join refuses a non-string (TypeError); all of them together short: each one is
    if len("".join(value)) > MAX_STRING_CHARS and max(map(len, value)) > MAX_STRING_CHARS:
        raise _CannotVouch
    return value


def _floats_fast(value: Any) -> list[float]:
    if type(value) is not list:
        raise _CannotVouch
    kinds = list(map(type, value))
    if kinds.count(float) == len(kinds):  # in C, and exact: a boolean is not a float
        return value
    if set(kinds) <= _NUMBER:  # integers are read as floats, as the careful path does
        _CONVERSIONS.count += 1
        return [float(v) for v in value]
    raise _CannotVouch


def _float_rows_fast(value: Any) -> list[list[float]]:
    """Lists of floats (a simulation's distributions), all rows checked in one pass."""
    if type(value) is not list or not set(map(type, value)) <= _LIST:
        raise _CannotVouch
    kinds = list(map(type, chain.from_iterable(value)))
    if kinds.count(float) == len(kinds):
        return value
    return [_floats_fast(row) for row in value]


def _optional_floats_fast(value: Any) -> list[float | None]:
    if type(value) is not list:
        raise _CannotVouch
    kinds = set(map(type, value))
    if kinds <= _FLOAT_OR_NONE:
        return value
    if kinds <= _NUMBER_OR_NONE:
        _CONVERSIONS.count += 1
        return [None if v is None else float(v) for v in value]
    raise _CannotVouch


def _ints_fast(value: Any) -> list[int]:
    if type(value) is not list or not set(map(type, value)) <= _INT:
        raise _CannotVouch
    return value


def _string_fast(value: Any) -> str:
    if type(value) is not str or len(value) > MAX_STRING_CHARS:
        raise _CannotVouch
    return value


def _int_fast(value: Any) -> int:
    if type(value) is not int:
        raise _CannotVouch
    return value


def _float_fast(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        _CONVERSIONS.count += 1
        return float(value)
    raise _CannotVouch


def _activation_record_fast(value: Any) -> ActivationRecord:
    """The bulk of every activations file, checked inline."""
    if type(value) is not dict or (
        len(value) != 2
        and not (len(value) == 3 and value.get("dataclass_name") == "ActivationRecord")
    ):
        raise _CannotVouch
    tokens = _strings_fast(value["tokens"])
    activations = _floats_fast(value["activations"])
    if len(tokens) != len(activations):
        raise _CannotVouch
    return ActivationRecord(tokens, activations)


def _activation_records_fast(value: Any) -> list[ActivationRecord]:
    """A list of records (a neuron file's bulk): built in one loop, then every token and
    every activation of the whole list checked at once, in C."""
    if type(value) is not list:
        raise _CannotVouch
    records = []
    for item in value:
        if type(item) is not dict or (
            len(item) != 2
            and not (len(item) == 3 and item.get("dataclass_name") == "ActivationRecord")
        ):
            raise _CannotVouch
        tokens, activations = item["tokens"], item["activations"]
        if type(tokens) is not list or type(activations) is not list:
            raise _CannotVouch
        if len(tokens) != len(activations):
            raise _CannotVouch
        records.append(ActivationRecord(tokens, activations))
    every_token = list(chain.from_iterable(r.tokens for r in records))
    # join refuses a non-string (TypeError); all of them together short: each one is
    if len("".join(every_token)) > MAX_STRING_CHARS:
        _strings_fast(every_token)
    kinds = list(map(type, chain.from_iterable(r.activations for r in records)))
    if kinds.count(float) != len(kinds):  # integers (read as floats) or worse: each one
        for record in records:
            record.activations = _floats_fast(record.activations)
    return records


def _same_lengths(*pairs: tuple[list[Any], list[Any]]) -> None:
    for a, b in pairs:
        if len(a) != len(b):
            raise _CannotVouch


def _consistent(value: Any) -> None:
    """What `_check` asks of a value beyond its types (finiteness: orjson saw to it)."""
    if isinstance(value, SequenceSimulation):
        _same_lengths((value.tokens, value.expected_activations))
    elif isinstance(value, ScoredSequenceSimulation):
        _same_lengths((value.simulation.tokens, value.true_activations))
    elif isinstance(value, TokenLookupTableSummaryOfNeuron):
        _same_lengths((value.tokens, value.average_activations))
    elif isinstance(value, TokensAndWeights):
        _same_lengths((value.tokens, value.strengths))
    elif isinstance(value, NeuronConnections):
        _same_lengths(
            (value.top_positive_neurons, value.top_positive_weights),
            (value.top_negative_neurons, value.top_negative_weights),
        )


_SCALARS: dict[Any, Decoder] = {str: _string_fast, int: _int_fast, float: _float_fast}


@cache
def _decoder(tp: Any) -> Decoder:
    """A decoder for a type of the model, made once per type from its hints."""
    if tp is ActivationRecord:
        return _activation_record_fast
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        (inner,) = [t for t in typing.get_args(tp) if t is not type(None)]
        decode_inner = _decoder(inner)
        return lambda value: None if value is None else decode_inner(value)
    if origin is list:
        (item,) = typing.get_args(tp)
        lists: dict[Any, Decoder] = {
            ActivationRecord: _activation_records_fast,
            str: _strings_fast,
            float: _floats_fast,
            int: _ints_fast,
            float | None: _optional_floats_fast,
            list[float]: _float_rows_fast,
        }
        if item in lists:
            return lists[item]
        decode_item = _decoder(item)

        def decode_list(value: Any) -> list[Any]:
            if type(value) is not list:
                raise _CannotVouch
            return [decode_item(v) for v in value]

        return decode_list
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    raise TypeError(f"no fast decoder for {tp}")  # pragma: no cover


def _field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their types (its hints resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _dataclass_decoder(cls: type) -> Decoder:
    fields = _field_types(cls)
    required = frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    decoders: dict[str, Decoder] = {}
    name = cls.__name__
    checked = cls in (
        SequenceSimulation,
        ScoredSequenceSimulation,
        TokenLookupTableSummaryOfNeuron,
        TokensAndWeights,
        NeuronConnections,
    )

    def decode(value: Any) -> Any:
        if type(value) is not dict:
            raise _CannotVouch
        if not decoders:  # filled on first use: the hints may refer to this very class
            decoders.update({key: _decoder(tp) for key, tp in fields.items()})
        kwargs = {}
        for key, item in value.items():
            decode_field = decoders.get(key)
            if decode_field is None:
                if key == "dataclass_name" and item == name:
                    continue
                raise _CannotVouch
            kwargs[key] = decode_field(item)
        if not required <= kwargs.keys():
            raise _CannotVouch
        built = cls(**kwargs)
        if checked:
            _consistent(built)
        return built

    return decode


# --- a stored copy the current rules accepted as exact: the fast path's objects, no checks ---


def _trusted_value(kind: Kind, text: str) -> Any:
    """The model object of a stored exact copy, or None if it does not build (then `accept`
    decides, and names what is wrong)."""
    payload = _first_json_line(text) if kind is Kind.EXPLANATIONS else text
    if payload is None:
        return None
    try:
        return _trusted_decoder(kind.model_class)(orjson.loads(payload))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # orjson's JSONDecodeError is a ValueError


def _same(value: Any) -> Any:
    return value


def _activation_record_trusted(value: Any) -> ActivationRecord:
    return ActivationRecord(value["tokens"], value["activations"])


@cache
def _trusted_decoder(tp: Any) -> Decoder:
    """How an exact copy of a type of the model is built: what `_decoder` builds from it, with
    the same objects (lists of scalars as orjson made them), without checking on the way."""
    if tp is ActivationRecord:
        return _activation_record_trusted
    if tp in _SCALARS:
        return _same
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        (inner,) = [t for t in typing.get_args(tp) if t is not type(None)]
        decode_inner = _trusted_decoder(inner)
        if decode_inner is _same:
            return _same
        return lambda value: None if value is None else decode_inner(value)
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is ActivationRecord:
            return lambda value: [ActivationRecord(r["tokens"], r["activations"]) for r in value]
        decode_item = _trusted_decoder(item)
        if decode_item is _same:
            return _same
        return lambda value: [decode_item(v) for v in value]
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _trusted_dataclass_decoder(tp)
    raise TypeError(f"no decoder for {tp}")  # pragma: no cover


def _trusted_dataclass_decoder(cls: type) -> Decoder:
    fields = _field_types(cls)
    decoders: dict[str, Decoder] = {}

    def decode(value: Any) -> Any:
        if not decoders:  # filled on first use: the hints may refer to this very class
            decoders.update({key: _trusted_decoder(tp) for key, tp in fields.items()})
        return cls(
            **{key: decoders[key](item) for key, item in value.items() if key != "dataclass_name"}
        )

    return decode
