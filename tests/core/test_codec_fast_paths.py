"""`codec.to_jsonable`'s fast paths (fields listed once per class, scalar lists copied whole
when they hold no NaN or infinity) write exactly what the plain walk writes."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from enum import Enum
from typing import Any

import pytest

from neuron_desk.core import codec
from neuron_desk.core.model import (
    ActivationScale,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
)


def plain(obj: Any, *, upstream: bool = False) -> Any:
    """The walk as it was before the fast paths (the reference)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        if type(obj).__name__ in codec._NAMED:
            out["dataclass_name"] = type(obj).__name__
        for f in dataclasses.fields(obj):
            if upstream and f.metadata.get("extension"):
                continue
            out[f.name] = plain(getattr(obj, f.name), upstream=upstream)
        return out
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        if all(type(x) in codec._JSON_SCALARS for x in obj):
            return [x if type(x) is not float or math.isfinite(x) else None for x in obj]
        return [plain(x, upstream=upstream) for x in obj]
    if isinstance(obj, dict):
        return {str(k): plain(v, upstream=upstream) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def scored(odd: list[Any]) -> ScoredSimulation:
    rng = random.Random(3)

    def sequence(i: int) -> ScoredSequenceSimulation:
        n = 16
        expected: list[Any] = [rng.random() * 10 for _ in range(n)]
        if i < len(odd):
            expected[5] = odd[i]
        simulation = SequenceSimulation(
            tokens=[f" t\u00e9{j}" for j in range(n)],
            expected_activations=expected,
            activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
            distribution_values=[[float(v) for v in range(11)] for _ in range(n)],
            distribution_probabilities=[[rng.random() for _ in range(11)] for _ in range(n)],
            method="all_at_once",
            model="m",
            missing_positions=[2, 3],
        )
        return ScoredSequenceSimulation(
            simulation=simulation,
            true_activations=[rng.random() for _ in range(n)],
            ev_correlation_score=math.nan if i == 1 else 0.5,
        )

    return ScoredSimulation(
        [sequence(i) for i in range(len(odd) + 2)], ev_correlation_score=0.25, method="m"
    )


ODD = [math.nan, math.inf, -math.inf, 1e308, 7, True, None, "x", (1.0, 2.0), 1e-320, -0.0]


@pytest.mark.parametrize("upstream", [False, True])
def test_the_fast_walk_writes_what_the_plain_walk_writes(upstream: bool) -> None:
    obj = scored(ODD)
    assert codec.to_jsonable(obj, upstream=upstream) == plain(obj, upstream=upstream)
    text = codec.dumps(obj, upstream=upstream)
    assert text == json.dumps(plain(obj, upstream=upstream), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize(
    "values",
    [
        [1.0, math.nan],
        [math.inf, 1.0],
        [1e308, 1e308],  # their sum overflows, each is finite
        [1, math.nan],
        [True, 2.5, None],
        (0.5, -math.inf),
        [],
        ["a", 1, None, False],
    ],
    ids=repr,
)
def test_scalar_lists(values: Any) -> None:
    assert codec.to_jsonable(values) == plain(values)
    assert type(codec.to_jsonable(values)) is list
    assert codec.to_jsonable(values) is not values  # a copy, as before
