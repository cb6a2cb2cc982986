"""What every command needs: the store, the registry and the neuron service, opened lazily."""

from __future__ import annotations

import argparse

from neuron_desk.core.errors import (
    CodecError,
    NeuronOutOfRange,
    UnknownDataset,
)
from neuron_desk.core.paths import store_path
from neuron_desk.data.registry import Registry
from neuron_desk.data.store import Store

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2


def exit_code_of(exc: BaseException) -> int:
    """2 for bad arguments or input; 1 for everything else (not found, offline, failures)."""
    if isinstance(exc, CodecError | NeuronOutOfRange | UnknownDataset | ValueError):
        return EXIT_BAD_INPUT
    return EXIT_NOT_FOUND


def parse_range(text: str) -> tuple[int, int]:
    """ "5" or "0-99" as (first, last), for argparse."""
    first, _, last = text.partition("-")
    try:
        start, end = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or range: {text!r}") from None
    if end < start:
        raise argparse.ArgumentTypeError(f"empty range: {text!r}")
    return start, end


class Context:
    """Lazily opened resources shared by the commands of one invocation."""

    def __init__(self) -> None:
        self._store: Store | None = None
        self._registry: Registry | None = None

    @property
    def store(self) -> Store:
        """The user's store (created on first use)."""
        if self._store is None:
            self._store = Store.open(store_path())
        return self._store

    @property
    def registry(self) -> Registry:
        """Every known dataset."""
        if self._registry is None:
            self._registry = Registry(self.store)
        return self._registry

    def close(self) -> None:
        """Close what was opened."""
        if self._store is not None:
            self._store.close()
