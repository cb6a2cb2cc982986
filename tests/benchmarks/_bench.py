"""BENCH lines (the format: tests/benchmarks/README.md; issue 12): one JSON object per measured target,
collected by `run_all.py` into docs/performance.md. Imported by the scripts beside it."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from typing import Any


def bench(
    benchmark: str,
    target: str,
    figure: float,
    unit: str,
    limit: float,
    *,
    note: str = "",
    minimum: bool = False,
) -> dict[str, Any]:
    """Print one BENCH line: `figure` against an upper `limit` (or a lower one, `minimum`)."""
    ratio = figure / limit if limit else float("inf")
    line: dict[str, Any] = {
        "benchmark": benchmark,
        "target": target,
        "figure": round(figure, 3),
        "unit": unit,
        "limit": limit,
        "ratio": round(ratio, 3),
        "ok": ratio >= 1 if minimum else ratio <= 1,
    }
    if minimum:
        line["limit_kind"] = "min"
    if note:
        line["note"] = note
    print("BENCH " + json.dumps(line, ensure_ascii=False), flush=True)
    return line


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """The median of `values`."""
    return statistics.median(values)
