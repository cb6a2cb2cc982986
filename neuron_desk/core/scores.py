"""One ordering of results by score: best first, a missing score last.

Scores are correlations in [-1, 1]; a missing one (None, or NaN) means "no score", which sorts
after every real score, 0.0 and negative ones included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def has_score(score: float | None) -> bool:
    """Whether `score` is a real number (not None, not NaN)."""
    return score is not None and not math.isnan(score)


def best_first_key(score: float | None) -> tuple[int, float]:
    """A sort key: higher scores first, a missing score after all of them."""
    return (0, -score) if score is not None and has_score(score) else (1, 0.0)


def best_first(items: Iterable[T], score: Callable[[T], float | None]) -> list[T]:
    """`items` sorted best score first (stable; missing scores last)."""
    return sorted(items, key=lambda item: best_first_key(score(item)))


def best_of(items: Iterable[T], score: Callable[[T], float | None]) -> T | None:
    """The item with the best score (a scored one if there is any); None if `items` is empty."""
    ordered = best_first(items, score)
    return ordered[0] if ordered else None
