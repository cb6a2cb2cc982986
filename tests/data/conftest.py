"""Fixtures of the data tests: the mirror as a registered dataset."""

from __future__ import annotations

import pytest

from neuron_desk.data.registry import ALL_KINDS, Dataset, Registry
from neuron_desk.data.store import Store
from tests.conftest import NEURONS
from tests.data.mirror import Mirror

__all__ = ["NEURONS", "mirror_dataset"]


def mirror_dataset(base_url: str) -> Dataset:
    return Dataset(
        name="mirror",
        title="Test mirror",
        model="synthetic",
        n_layers=2,
        n_neurons=8,
        kinds=ALL_KINDS,
        tokenizer="gpt2",
        base_url=base_url,
    )


@pytest.fixture
def registry(store: Store, mirror: Mirror) -> Registry:
    r = Registry(store, bundled=[])
    r.add(mirror_dataset(mirror.base_url))
    return r
