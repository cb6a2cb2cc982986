"""A dataset can be a dictionary: its units are latents of an SAE at named hook points."""

from __future__ import annotations

import pytest

from neuron_desk.core.errors import NeuronOutOfRange
from neuron_desk.data.registry import Dataset, Dictionary, Kind


def _latents() -> Dataset:
    return Dataset(
        name="toy-sae",
        title="Toy SAE",
        model="toy",
        n_layers=2,
        n_neurons=64,
        kinds=(Kind.ACTIVATIONS,),
        tokenizer="toy",
        folder="/tmp/toy",
        dictionary=Dictionary(
            kind="sae",
            architecture="topk",
            d_in=16,
            d_sae=64,
            hook_points=("model.layers.3", "model.layers.9"),
            k=8,
        ),
    )


def test_a_dictionary_names_its_units_latents_and_its_layers_hook_points() -> None:
    dataset = _latents()
    assert dataset.unit == "latent" and dataset.units == "latents"
    assert dataset.layer_label(1) == "SAE at model.layers.9"
    with pytest.raises(NeuronOutOfRange, match="no latent 64"):
        dataset.check(0, 64)


def test_a_dictionary_dataset_survives_its_spec() -> None:
    dataset = _latents()
    again = Dataset.from_spec(dataset.to_spec())
    assert again == dataset
    assert again.dictionary is not None and again.dictionary.hook_points == dataset.dictionary.hook_points


def test_a_neuron_dataset_stays_one() -> None:
    dataset = Dataset.from_spec({**_latents().to_spec(), "dictionary": None})
    assert dataset.unit == "neuron" and dataset.layer_label(3) == "layer 3"
