"""What every command needs: the store, the registry and the neuron service, opened lazily."""

from __future__ import annotations

from neuron_desk.core.errors import (
    CodecError,
    DataError,
    NeuronOutOfRange,
    NotAvailableOffline,
    NotFound,
    UnknownDataset,
)
from neuron_desk.core.paths import store_path
from neuron_desk.data.registry import Registry
from neuron_desk.data.store import Store

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2


def exit_code_of(exc: BaseException) -> int:
    """1 for not found / not available offline, 2 for bad arguments or input, else 1."""
    if isinstance(exc, NotFound | NotAvailableOffline):
        return EXIT_NOT_FOUND
    if isinstance(exc, CodecError | NeuronOutOfRange | UnknownDataset | ValueError):
        return EXIT_BAD_INPUT
    if isinstance(exc, DataError):
        return EXIT_NOT_FOUND
    return EXIT_NOT_FOUND


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
