"""The neuron identity, the one best-first ordering, and the Paths value object."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.scores import best_first, best_first_key, best_of


def test_best_first_puts_missing_scores_last_and_zero_above_negative() -> None:
    scores = [None, -0.5, 0.0, 0.7, float("nan"), -1.0, 0.0001]
    ordered = best_first(scores, lambda s: s)
    assert ordered[:5] == [0.7, 0.0001, 0.0, -0.5, -1.0]
    assert ordered[5] is None and math.isnan(ordered[6])  # both missing, kept in input order
    # The two mistakes this replaces: `-(score or -2.0)` ranked 0.0 below -0.5.
    assert best_first_key(0.0) < best_first_key(-0.5)
    assert best_first_key(-1.0) < best_first_key(None)


def test_best_of_prefers_any_score_to_none() -> None:
    assert best_of([None, -0.9, None], lambda s: s) == -0.9
    assert best_of([None, None], lambda s: s) is None
    assert best_of([], lambda s: s) is None
    rows = [("a", 0.0), ("b", -0.5), ("c", None)]
    assert best_of(rows, lambda row: row[1]) == ("a", 0.0)


def test_neuron_ref_is_a_value() -> None:
    ref = NeuronRef("gpt2-xl", 5, 131)
    assert ref == NeuronRef("gpt2-xl", 5, 131) and hash(ref) == hash(NeuronRef("gpt2-xl", 5, 131))
    assert str(ref) == "gpt2-xl 5:131" and ref.short == "5:131"
    assert sorted([NeuronRef("a", 1, 0), NeuronRef("a", 0, 9), NeuronRef("a", 0, 2)]) == [
        NeuronRef("a", 0, 2),
        NeuronRef("a", 0, 9),
        NeuronRef("a", 1, 0),
    ]
    assert NeuronRef.from_json(ref.to_json()) == ref
    assert ref.moved(index=7) == NeuronRef("gpt2-xl", 5, 7)
    with pytest.raises(ValueError, match="not a neuron reference"):
        NeuronRef.from_json(["gpt2-xl", "five", 1])
    with pytest.raises(AttributeError):
        ref.layer = 6  # type: ignore[misc]


def test_paths_from_the_environment_write_nothing(tmp_path: Path) -> None:
    env = {"NEURON_DESK_HOME": str(tmp_path / "home"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "tk")}
    paths = Paths.from_env(env)
    assert paths.store == tmp_path / "home" / "store.sqlite3"
    assert paths.profiles == tmp_path / "home" / "llm_profiles.json"
    assert paths.settings == tmp_path / "home" / "settings.ini"
    assert paths.local_server_log == tmp_path / "home" / "local-llm-server.log"
    assert paths.tiktoken_cache == tmp_path / "tk"
    assert env == {"NEURON_DESK_HOME": str(tmp_path / "home"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "tk")}
    assert not (tmp_path / "home").exists()  # a value object: nothing is created
    default = Paths.from_env({"NEURON_DESK_HOME": str(tmp_path)})
    assert default.tiktoken_cache.name == "data-gym-cache"  # tiktoken's own default
