"""An endpoint's answer as it came over the wire: the decoded object and its raw bytes.

The client decodes a response body once (orjson; the standard library only for what orjson
refuses, such as the `-Infinity` some servers write for a logprob) and keeps the bytes it
decoded, with the API key already blanked, so the response cache stores them as they are
instead of encoding the object again.
"""

from __future__ import annotations

import json
from typing import Any

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


def parse_json(raw: bytes) -> Any:
    """Decode JSON bytes: orjson, else the standard library (NaN, Infinity); ValueError if
    neither can."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # raises ValueError (JSONDecodeError, UnicodeDecodeError)


def dumps(response: dict[str, Any]) -> bytes:
    """Compact JSON bytes of an answer: its raw bytes when it has them, else encoded."""
    raw = raw_of(response)
    if raw is not None:
        return raw
    try:
        return orjson.dumps(response)
    except TypeError:  # an integer beyond 64 bits, a key that is not a string
        return json.dumps(response, ensure_ascii=False).encode()


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
