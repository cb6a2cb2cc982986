"""Second opinions read as "scorer value": delphi's balanced accuracy, Neuronpedia's own value."""

from __future__ import annotations

from neuron_desk.qt.models import opinions_text


def test_an_imported_score_without_balanced_accuracy_shows_its_value() -> None:
    opinions = [
        {"scorer": "detection", "balanced_accuracy": 0.8125},
        {"scorer": "neuronpedia:eleuther_fuzz", "value": 0.71, "score_model": "x"},
        {"scorer": "fuzzing"},
    ]
    assert opinions_text(opinions) == "detection 0.81 · neuronpedia:eleuther_fuzz 0.71 · fuzzing n/a"
