"""Fixtures: an isolated store, a mirror of the public layout on 127.0.0.1, a service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.data.registry import ALL_KINDS, Dataset, Registry
from neuron_desk.data.store import Store
from tests.data.mirror import Faults, Mirror, write_public_layout

NEURONS = [(0, n) for n in range(6)] + [(1, 0), (1, 1)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store.sqlite3")
    yield s
    s.close()


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    write_public_layout(root, NEURONS)
    return root


@pytest.fixture
def mirror(layout: Path) -> Iterator[Mirror]:
    with Mirror(layout, Faults()) as m:
        yield m


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
