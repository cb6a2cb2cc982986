"""Text that came from outside, made safe to print, and secrets kept out of text.

`for_terminal` escapes what a terminal would act on instead of showing: C0/C1 control
characters (ESC starts colour and set-title sequences, CR rewrites a line, NUL), DEL, bidi
overrides and isolates, zero-width characters, and lone surrogates (which cannot be encoded).
`redact` blanks secrets in a text; do it before a text is cut, so no part of a key survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TextIO

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # control characters but tab and newline
    "\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"  # zero-width, bidi, separators
    "\ud800-\udfff]"  # lone surrogates
)
_UNSAFE_LINES = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"  # also a valid escape inside a JSON string


def for_terminal(text: str, *, keep_newlines: bool = True) -> str:
    """`text` with every character a terminal would act on written as an escape (\\u001b).

    `keep_newlines` False escapes tabs and newlines too (one line per value).
    """
    pattern = _UNSAFE if keep_newlines else _UNSAFE_LINES
    return pattern.sub(_escape, text)


def has_unsafe(text: str) -> bool:
    """Whether `for_terminal` would change `text`."""
    return _UNSAFE.search(text) is not None


REDACTED = "***"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret (of 4 characters or more) replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class TerminalWriter:
    """A text stream that writes `for_terminal(text)` to the stream it wraps (stdout)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        """Write `text`, escaped."""
        self.stream.write(for_terminal(text))
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.stream.flush()

    def fileno(self) -> int:
        """The wrapped stream's file descriptor."""
        return self.stream.fileno()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal."""
        return self.stream.isatty()
