"""Identities: which neuron (or latent of a dictionary) of which dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True, slots=True)
class NeuronRef:
    """One unit of a dataset: a neuron of a layer, or a latent of a dictionary's hook point.

    `layer` is the layer (or the dictionary's hook point); `index` the unit's index in it,
    both from 0. Sorting orders by dataset, layer, then index.
    """

    dataset: str
    layer: int
    index: int

    def __str__(self) -> str:
        return f"{self.dataset} {self.layer}:{self.index}"

    @property
    def short(self) -> str:
        """"layer:index", for places where the dataset is obvious."""
        return f"{self.layer}:{self.index}"

    def moved(self, *, layer: int | None = None, index: int | None = None) -> NeuronRef:
        """The same dataset, another layer and/or index."""
        layer = self.layer if layer is None else layer
        return NeuronRef(self.dataset, layer, self.index if index is None else index)

    def to_json(self) -> list[Any]:
        """[dataset, layer, index], as kept in settings."""
        return [self.dataset, self.layer, self.index]

    @classmethod
    def from_json(cls, value: Any) -> NeuronRef:
        """The ref of `to_json`'s list; ValueError if it is not one."""
        try:
            dataset, layer, index = value
            return cls(str(dataset), int(layer), int(index))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a neuron reference: {value!r}") from exc
