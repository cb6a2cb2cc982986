"""JSON codec for the data model, compatible with the public neuron-explainer files.

Reading is typed: the caller names the class it expects, and every value is checked against
the dataclass field types, so a malformed file fails with a `CodecError` that names the field
(`NeuronRecord.most_positive_activation_records[3].activations[7]`). Objects may carry
"dataclass_name" or not; nulls are accepted where the model allows them; bare `NaN` (written
by Python's json module) is read as a float NaN.

Writing follows the original tooling: `json.dumps` separators, "dataclass_name" on the
registered classes, NaN written as null (valid JSON, and read back as None by the original).
`upstream=True` leaves out the fields the original dataclasses do not have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from enum import Enum
from functools import cache
from typing import Any, TypeVar, Union

import orjson

from neuron_desk.core.errors import CodecError
from neuron_desk.core.model import UPSTREAM_DATACLASSES

T = TypeVar("T")

_NAMED = {cls.__name__: cls for cls in UPSTREAM_DATACLASSES}
_SCALARS = (float, str, int)


def parse_json(data: str | bytes, source: str | None = None) -> Any:
    """Parse JSON text; accept bare NaN/Infinity; raise CodecError on anything malformed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # orjson rejects NaN and Infinity; the standard library accepts them
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise CodecError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=source
        ) from None
    except json.JSONDecodeError as exc:
        raise CodecError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=source
        ) from None
    except RecursionError:
        raise CodecError("JSON nested too deeply", source=source) from None


def loads(data: str | bytes, cls: type[T], source: str | None = None) -> T:
    """Parse JSON text into an instance of `cls`, checking every field."""
    return from_jsonable(parse_json(data, source), cls, source)


def from_jsonable(value: Any, cls: type[T], source: str | None = None) -> T:
    """Convert parsed JSON (dicts, lists, scalars) into an instance of `cls`."""
    try:
        return typing.cast(T, _decode(value, cls, cls.__name__))
    except CodecError as exc:
        if source and not exc.source:
            raise CodecError(str(exc), exc.path, source) from None
        raise
    except RecursionError:
        raise CodecError("JSON nested too deeply", source=source) from None


def dumps(obj: Any, *, upstream: bool = False) -> str:
    """Serialize a model object as the original tooling writes it (one line)."""
    return json.dumps(to_jsonable(obj, upstream=upstream), allow_nan=False)


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def to_jsonable(obj: Any, *, upstream: bool = False) -> Any:
    """Convert a model object into JSON-ready dicts and lists."""
    if type(obj) is list or type(obj) is tuple:  # the bulk, neither a dataclass nor an Enum
        return _jsonable_list(obj, upstream)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        named, fields = _written_fields(type(obj), upstream)
        out: dict[str, Any] = {"dataclass_name": named} if named else {}
        for name in fields:
            out[name] = to_jsonable(getattr(obj, name), upstream=upstream)
        return out
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return _jsonable_list(obj, upstream)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, upstream=upstream) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return to_jsonable(obj.item(), upstream=upstream)
    return obj


_FLOAT = frozenset({float})


def _jsonable_list(obj: list[Any] | tuple[Any, ...], upstream: bool) -> list[Any]:
    kinds = set(map(type, obj))
    if kinds <= _JSON_SCALARS:  # token and activation lists
        if float not in kinds or (kinds == _FLOAT and math.isfinite(sum(obj, 0.0))):
            return list(obj)  # no NaN or infinity among them (their sum would show it)
        return [x if type(x) is not float or math.isfinite(x) else None for x in obj]
    return [to_jsonable(x, upstream=upstream) for x in obj]


@cache
def _written_fields(cls: type, upstream: bool) -> tuple[str | None, tuple[str, ...]]:
    """A dataclass's "dataclass_name" (None for unregistered classes) and the fields written,
    in order (`upstream`: without the extensions)."""
    fields = tuple(
        f.name for f in dataclasses.fields(cls) if not (upstream and f.metadata.get("extension"))
    )
    return (cls.__name__ if cls.__name__ in _NAMED else None), fields


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _required(cls: type) -> frozenset[str]:
    return frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _decode(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        non_null = [o for o in options if o is not type(None)]
        if len(non_null) == 1:
            return _decode(value, non_null[0], path)
        raise CodecError(f"unsupported union type {tp}", path)  # pragma: no cover
    if origin is list:
        if not isinstance(value, list):
            raise CodecError(f"expected a list, got {_describe(value)}", path)
        (item_type,) = typing.get_args(tp)
        if item_type in _SCALARS and all(type(v) is item_type for v in value):
            return list(value)  # the common case, checked in one pass
        if item_type is float:
            return [_decode_float(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [_decode(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        return _decode_float(value, path)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodecError(f"expected an integer, got {_describe(value)}", path)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise CodecError(f"expected a string, got {_describe(value)}", path)
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise CodecError(f"expected one of {allowed}, got {value!r}", path) from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(value, tp, path)
    raise CodecError(f"unsupported type {tp}", path)  # pragma: no cover


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _decode_float(value: Any, path: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise CodecError("an integer too large for a number", path) from None
    raise CodecError(f"expected a number, got {_describe(value)}", path)


def _decode_dataclass(value: Any, cls: type, path: str) -> Any:
    if not isinstance(value, dict):
        raise CodecError(f"expected a {cls.__name__} object, got {_describe(value)}", path)
    name = value.get("dataclass_name")
    if name is not None and not isinstance(name, str):
        raise CodecError(f"dataclass_name must be a string, got {_describe(name)}", path)
    if name is not None and name != cls.__name__:
        found = f"a {name}" if name in _NAMED else f"an unknown dataclass_name {name!r}"
        raise CodecError(f"expected a {cls.__name__}, found {found}", path)
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if key == "dataclass_name":
            continue
        if key not in hints:
            raise CodecError(
                f"unknown field {key!r} in {cls.__name__}", f"{path}.{_shortened(key)}"
            )
        kwargs[key] = _decode(item, hints[key], f"{path}.{key}")
    missing = sorted(_required(cls) - kwargs.keys())
    if missing:
        raise CodecError(f"missing field {missing[0]!r} of {cls.__name__}", f"{path}.{missing[0]}")
    return cls(**kwargs)
