"""Searching explanations: the best match first, and equal matches best score first."""

from __future__ import annotations

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store


def test_equal_matches_come_best_score_first(store: Store) -> None:
    explanations = Explanations(store)
    ref = NeuronRef("smollm2-135m", 0, 972)
    for score in (-0.01, 0.31, None, 0.12):  # the same explanation sampled four times
        explanations.add(ref, "the word copy and programming terms", score, "generated", {})
    explanations.add(NeuronRef("smollm2-135m", 1, 5), "copy", 0.05, "generated", {})
    found = explanations.search("copy")
    same = [row.score for row in found if row.explanation.startswith("the word")]
    assert same == [0.31, 0.12, -0.01, None]
    assert len(found) == 5
