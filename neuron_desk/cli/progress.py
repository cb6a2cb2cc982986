"""One progress line on a terminal's stderr (requests, neurons, files), silent elsewhere.

Shown only when stderr is a terminal and the command was not asked for JSON, so pipes, logs
and `--json` output stay clean.
"""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """A `[####----] 12/31 requests · 3,400 tokens · ~20 s left` line, redrawn in place."""

    WIDTH = 30

    def __init__(self, unit: str, *, enabled: bool | None = None) -> None:
        self.unit = unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._shown = False

    @classmethod
    def for_args(cls, unit: str, json_output: bool) -> ProgressLine:
        """A line for a command: off under --json, off when stderr is not a terminal."""
        return cls(unit, enabled=not json_output and sys.stderr.isatty())

    def update(self, done: int, total: int, *, tokens: int | None = None, extra: str = "") -> None:
        """Redraw the line with `done` of `total` (and tokens used, and any extra words)."""
        if not self.enabled:
            return
        total = max(total, 1)
        done = min(done, total)
        filled = self.WIDTH * done // total
        parts = [f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done}/{total} {self.unit}"]
        if tokens is not None:
            parts.append(f"{tokens:,} tokens")
        elapsed = time.monotonic() - self._started
        if 0 < done < total and elapsed > 1:
            parts.append(f"~{elapsed / done * (total - done):.0f} s left")
        if extra:
            parts.append(extra)
        print("\r" + " · ".join(parts) + "\x1b[K", end="", file=sys.stderr, flush=True)
        self._shown = True

    def finish(self) -> None:
        """End the line (a newline), if one was drawn."""
        if self._shown:
            print(file=sys.stderr, flush=True)
            self._shown = False
