"""Fixtures shared by the test packages: an isolated store, and a mirror of the public layout
served over HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.data.store import Store
from tests.data.mirror import Faults, Mirror, write_public_layout

NEURONS = [(0, n) for n in range(6)] + [(1, 0), (1, 1)]
"""The neurons the mirror has files for (layer 1, neurons 2-7 have none)."""


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
