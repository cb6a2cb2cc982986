"""An endpoint's answer as it came over the wire: the decoded object and its raw bytes.

The client decodes a response body once (orjson; the standard library only for what orjson
refuses, such as the `-Infinity` some servers write for a logprob) and keeps the bytes it
decoded, with the API key already blanked, so the response cache stores them as they are
instead of encoding the object again. The per-position top logprobs of a completions echo are
decoded when read (`parse_answer`, `LazyEntries`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any, SupportsIndex

import msgspec
import numpy as np
import orjson

from neuron_desk.core.text import REDACTED


class RawAnswer(dict[str, Any]):
    """A decoded JSON object that remembers the (redacted) bytes it was decoded from.

    `raw` stands for the object only while it is unchanged: code that edits an answer builds
    a new dict (as the n top-up does), which has no `raw` and is encoded again when cached.
    """

    __slots__ = ("raw",)

    def __init__(self, data: dict[str, Any], raw: bytes) -> None:
        super().__init__(data)
        self.raw = raw


def raw_of(response: dict[str, Any]) -> bytes | None:
    """The bytes an answer was decoded from, or None for an object built in code."""
    return response.raw if isinstance(response, RawAnswer) else None


def parse_json(raw: bytes | memoryview) -> Any:
    """Decode JSON bytes: orjson, else the standard library (NaN, Infinity); ValueError if
    neither can."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(bytes(raw))  # raises ValueError (JSONDecodeError, UnicodeDecodeError)


def dumps(response: dict[str, Any]) -> bytes:
    """Compact JSON bytes of an answer: its raw bytes when it has them, else encoded (an echo
    entry not yet decoded as the bytes it came as)."""
    raw = raw_of(response)
    if raw is not None:
        return raw
    try:
        return orjson.dumps(response, default=_fragment)
    except TypeError:  # an integer beyond 64 bits, a key that is not a string
        return json.dumps(response, ensure_ascii=False, default=_decoded).encode()


def _fragment(value: Any) -> orjson.Fragment:
    if type(value) is msgspec.Raw:
        return orjson.Fragment(bytes(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def _decoded(value: Any) -> Any:
    if type(value) is msgspec.Raw:
        return parse_json(memoryview(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def redact_bytes(raw: bytes, secret: str | None) -> bytes:
    """`raw` with the secret (4 characters or more) replaced by ***, also where it is written
    JSON-escaped (a server escaping "/" as "\\/")."""
    if not secret or len(secret) < 4:
        return raw
    plain = secret.encode()
    escaped = orjson.dumps(secret)[1:-1]
    for form in {plain, escaped, escaped.replace(b"/", b"\\/")}:
        if form in raw:
            raw = raw.replace(form, REDACTED.encode())
    return raw


# --- echoes: the top logprobs of every prompt position, decoded when read -------------------
#
# A prompt-logprobs echo (~640 KB for a scoring prompt) is mostly its `top_logprobs`: one map of
# 15 alternatives for each of ~1,400 prompt positions, of which the scorer reads the ~64 at its
# "unknown" slots. `parse_answer` decodes everything else as `parse_json` does and leaves each
# position's map as its bytes (located by one msgspec pass that checks the whole body's syntax)
# until it is read: `LazyEntries`, a list that decodes an entry on first access.


class _EchoLogprobs(msgspec.Struct):
    top_logprobs: list[msgspec.Raw] | None = None


class _EchoChoice(msgspec.Struct):
    logprobs: _EchoLogprobs | None = None


class _Echo(msgspec.Struct):
    choices: list[_EchoChoice] | None = None


_ECHO = msgspec.json.Decoder(_Echo)
_WHITESPACE = b" \t\r\n"
_QUOTE, _BACKSLASH, _COLON, _MINUS, _SPACE = 34, 92, 58, 45, 32
_MAX_VALUE_BYTES = 300
"""A gap this long between a key and the next key is checked value by value (it could hide an
integer too large for a float, which the careful check refuses)."""


def _address(buffer: Any) -> int:
    """Where a buffer's bytes are in memory (a `msgspec.Raw` points into the decoded body)."""
    return int(np.frombuffer(buffer, np.uint8).__array_interface__["data"][0])


def _decode_entry(entry: Any) -> Any:
    return parse_json(memoryview(entry)) if type(entry) is msgspec.Raw else entry


def _mutator(name: str) -> Any:
    method = getattr(list, name)

    def edit(self: LazyEntries, *args: Any) -> Any:
        self._decode_all()
        self._edited = True
        return method(self, *args)

    edit.__name__ = name
    edit.__doc__ = method.__doc__
    return edit


def _reader(name: str) -> Any:
    method = getattr(list, name)

    def read(self: LazyEntries, *args: Any) -> Any:
        self._decode_all()
        return method(self, *args)

    read.__name__ = name
    read.__doc__ = method.__doc__
    return read


class LazyEntries(list[Any]):
    """The `top_logprobs` list of an echo, each entry decoded (as `parse_json` decodes it) when
    first read. It is a list for every Python-level access: indexing, slicing, iteration, len,
    comparison, copying, `json.dumps`; an entry read is decoded once and kept. Only C code
    that reads a list's storage directly (`orjson.dumps`) sees the undecoded entries
    (`msgspec.Raw`) and refuses them; `dumps` (what the cache stores) encodes them as the
    bytes they are.

    `values_are_logprobs()` answers, from the bytes alone, whether every value of every object
    entry is a negative number, so a reader that must check them all need not decode them."""

    __slots__ = ("_edited", "_end", "_raw", "_start", "_undecoded")

    def __init__(self, entries: list[msgspec.Raw], raw: bytes, start: int, end: int) -> None:
        super().__init__(entries)
        self._raw, self._start, self._end = raw, start, end
        """The answer's bytes and the span of this list in them (`[` to `]`)."""
        self._undecoded = len(entries)
        self._edited = False

    def _entry(self, index: int) -> Any:
        value = list.__getitem__(self, index)
        if type(value) is msgspec.Raw:
            value = parse_json(memoryview(value))
            list.__setitem__(self, index, value)
            self._undecoded -= 1
        return value

    def _decode_all(self) -> None:
        if self._undecoded:
            list.__setitem__(self, slice(None), list(map(_decode_entry, list.__iter__(self))))
            self._undecoded = 0

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._entry(i) for i in range(*index.indices(len(self)))]
        return self._entry(index)

    def __iter__(self) -> Iterator[Any]:
        self._decode_all()
        return list.__iter__(self)

    def __eq__(self, other: object) -> bool:
        self._decode_all()
        if isinstance(other, LazyEntries):
            other._decode_all()
        return list.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        self._decode_all()
        return list.__repr__(self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        self._decode_all()
        return (list, (list(list.__iter__(self)),))

    def __copy__(self) -> list[Any]:
        copied: list[Any] = self[:]
        return copied

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copied: list[Any] = copy.deepcopy(self[:], memo)
        return copied

    __reversed__ = _reader("__reversed__")
    __contains__ = _reader("__contains__")
    __add__ = _reader("__add__")
    __mul__ = _reader("__mul__")
    __rmul__ = _reader("__rmul__")
    __lt__ = _reader("__lt__")
    __le__ = _reader("__le__")
    __gt__ = _reader("__gt__")
    __ge__ = _reader("__ge__")
    copy = _reader("copy")
    index = _reader("index")
    count = _reader("count")
    __setitem__ = _mutator("__setitem__")
    __delitem__ = _mutator("__delitem__")
    __iadd__ = _mutator("__iadd__")
    __imul__ = _mutator("__imul__")
    append = _mutator("append")
    extend = _mutator("extend")
    insert = _mutator("insert")
    pop = _mutator("pop")
    remove = _mutator("remove")
    clear = _mutator("clear")
    sort = _mutator("sort")
    reverse = _mutator("reverse")

    def values_are_logprobs(self) -> bool:
        """True when the bytes show that every value of every object entry is a negative JSON
        number (so a float <= 0, or an int <= 0 small enough for one); False when they don't
        show it (then read the entries). Decided in a few vectorised passes: every string's
        closing quote (escaped quotes set aside) is followed by `:-` or `: -`, so every string
        is a key and every value starts with a minus sign (msgspec has checked the syntax, so
        it is a number); a span with an escaped backslash, or a value longer than
        `_MAX_VALUE_BYTES`, is not decided here."""
        if self._edited:
            return False
        span = np.frombuffer(self._raw, np.uint8, count=self._end - self._start, offset=self._start)
        quotes = np.flatnonzero(span == _QUOTE)
        backslashes = span == _BACKSLASH
        if backslashes.any():
            if (backslashes[1:] & backslashes[:-1]).any():
                return False
            quotes = quotes[~backslashes[quotes - 1]]  # span[0] is "[", never a quote
        if len(quotes) % 2:
            return False
        closing, opening = quotes[1::2], quotes[2::2]
        if not len(closing):
            return True
        # After a key: ":" then "-", or ": -" (Python's json.dumps). The span ends with "]",
        # so closing + 1 is inside it; the next two are clipped to its last byte.
        last = len(span) - 1
        if not (span[closing + 1] == _COLON).all():
            return False
        value = np.minimum(closing + 2, last)
        value = np.minimum(value + (span[value] == _SPACE), last)
        if not (span[value] == _MINUS).all():
            return False
        gaps = np.append(opening, len(span)) - closing
        return bool(gaps.max() < _MAX_VALUE_BYTES)


def _echo_spans(raw: bytes) -> list[tuple[int, list[msgspec.Raw], int, int]] | None:
    """(choice, entries, start, end) of each non-empty `top_logprobs` list of an echo, or None
    when the body is not one (or not JSON msgspec reads: then `parse_json` decides)."""
    try:
        echo = _ECHO.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    spans = []
    base = _address(raw)
    for index, choice in enumerate(echo.choices or ()):
        entries = choice.logprobs.top_logprobs if choice.logprobs else None
        if not entries:
            continue
        head, tail = memoryview(entries[0]), memoryview(entries[-1])
        first = _address(head) - base
        last = _address(tail) - base + len(tail)
        if not (0 < first < last < len(raw)) or raw[first : first + len(head)] != head:
            return None  # not a view into the body (never seen): decode it whole
        start = raw.rfind(b"[", 0, first)
        end = raw.find(b"]", last) + 1
        if raw[start + 1 : first].strip(_WHITESPACE) or raw[last : end - 1].strip(_WHITESPACE):
            return None
        spans.append((index, entries, start, end))
    return spans


def parse_answer(raw: bytes) -> Any:
    """`parse_json` of an answer, except that each `top_logprobs` list of a completions echo is
    a `LazyEntries` that decodes a position's map when it is read. The rest decodes as before
    (same objects, same errors: a body `parse_json` refuses is refused here too)."""
    echo = b'"top_logprobs"' in raw and b'"token_logprobs"' in raw  # not chat's logprobs
    spans = _echo_spans(raw) if echo else None
    if not spans:
        return parse_json(raw)
    if not raw.isascii():  # msgspec leaves the skipped entries' UTF-8 unchecked
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return parse_json(raw)  # raises, as for any body that is not UTF-8
    pieces: list[bytes] = []
    cursor = 0
    for _index, _entries, start, end in spans:
        pieces += (raw[cursor:start], b"null")
        cursor = end
    pieces.append(raw[cursor:])
    data = parse_json(b"".join(pieces))
    try:
        for index, entries, start, end in spans:
            logprobs = data["choices"][index]["logprobs"]
            if logprobs["top_logprobs"] is not None:  # a repeated key: not the list we cut out
                return parse_json(raw)
            logprobs["top_logprobs"] = LazyEntries(entries, raw, start, end)
    except (KeyError, IndexError, TypeError):
        return parse_json(raw)
    return data
