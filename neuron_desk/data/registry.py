"""Datasets: the public GPT-2 sets, bundled samples, and the user's folders and mirrors.

A dataset knows its shape, which kinds of files it has, where they live (an HTTP root, a
local folder, or a bundled read-only SQLite store) and its model's tokenizer. Every kind has
one path template, shared by the public layout, mirrors and folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import neuron_desk.resources as resources  # resources/, mapped by pyproject's package-dir
from neuron_desk.core.errors import NeuronOutOfRange, UnknownDataset
from neuron_desk.core.model import (
    NeuronRecord,
    NeuronSimulationResults,
    RelatedNeurons,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.data.store import Store

PUBLIC_ROOT = "https://openaipublic.blob.core.windows.net/neuron-explainer"


class Kind(str, Enum):
    """The five kinds of per-neuron files."""

    ACTIVATIONS = "activations"
    EXPLANATIONS = "explanations"
    RELATED_NEURONS = "related-neurons"
    TOKENS_BY_ACTIVATION = "tokens-by-activation"
    TOKENS_BY_WEIGHT = "tokens-by-weight"

    @property
    def path_template(self) -> str:
        """Where a neuron's file of this kind lives, relative to the dataset root."""
        return _PATHS[self]

    @property
    def model_class(self) -> type:
        """The dataclass a file of this kind holds."""
        return _CLASSES[self]

    @property
    def label(self) -> str:
        """Human words for this kind ("this neuron has no <label>")."""
        return _LABELS[self]

    def relative_path(self, layer: int, neuron: int) -> str:
        """The file's path under the dataset root."""
        return self.path_template.format(layer=layer, neuron=neuron)


_PATHS = {
    Kind.ACTIVATIONS: "collated-activations/{layer}/{neuron}.json",
    Kind.EXPLANATIONS: "explanations/{layer}/{neuron}.jsonl",
    Kind.RELATED_NEURONS: "related-neurons/weight-based/{layer}/{neuron}.json",
    Kind.TOKENS_BY_ACTIVATION: "related-tokens/activation-based/{layer}/{neuron}.json",
    Kind.TOKENS_BY_WEIGHT: "related-tokens/weight-based/{layer}/{neuron}.json",
}
_CLASSES: dict[Kind, type] = {
    Kind.ACTIVATIONS: NeuronRecord,
    Kind.EXPLANATIONS: NeuronSimulationResults,
    Kind.RELATED_NEURONS: RelatedNeurons,
    Kind.TOKENS_BY_ACTIVATION: TokenLookupTableSummaryOfNeuron,
    Kind.TOKENS_BY_WEIGHT: WeightBasedSummaryOfNeuron,
}
_LABELS = {
    Kind.ACTIVATIONS: "activation records",
    Kind.EXPLANATIONS: "published explanation",
    Kind.RELATED_NEURONS: "related neurons",
    Kind.TOKENS_BY_ACTIVATION: "top tokens by activation",
    Kind.TOKENS_BY_WEIGHT: "top tokens by weight",
}
ALL_KINDS = tuple(Kind)


@dataclass(frozen=True)
class InterestingNeuron:
    """A neuron worth a look, with a short label (and a group heading)."""

    layer: int
    neuron: int
    label: str
    description: str = ""
    group: str = ""


@dataclass(frozen=True)
class Dictionary:
    """The sparse dictionary (an SAE or a transcoder) whose latents a dataset's units are.

    The dataset's layer i is the dictionary at `hook_points[i]`; its units are that
    dictionary's `d_sae` latents. A hook point is named as the model's module whose output
    the dictionary reads, e.g. "model.layers.9" (the residual stream after block 9) or
    "model.layers.9.mlp" (the MLP's output); a transcoder reads `hook_points[i]`'s input and
    predicts `outputs[i]`. `weights[i]`, when known, is a folder with that dictionary's
    weights in SAELens format (relative to the bundled file's folder, or absolute).
    """

    kind: str  # "sae" or "transcoder"
    architecture: str  # "standard", "topk", "jumprelu", "gated"; "unknown" (an import)
    d_in: int  # 0 when unknown (an import that does not say)
    d_sae: int
    hook_points: tuple[str, ...]
    weights: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    k: int | None = None
    source: str = ""  # who made it: "trained with eai-sparsify 1.3.3", "Neuronpedia export"

    def hook_label(self, layer: int) -> str:
        """Human words for layer `layer`'s hook point."""
        point = self.hook_points[layer] if 0 <= layer < len(self.hook_points) else f"#{layer}"
        return f"{self.kind.upper() if self.kind == 'sae' else self.kind} at {point}"

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Dictionary:
        """The dictionary a spec (`asdict` of one) describes."""
        values = dict(spec)
        for name in ("hook_points", "weights", "outputs"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)


@dataclass(frozen=True)
class Dataset:
    """A set of per-neuron files for one model (or per-latent files for a dictionary)."""

    name: str
    title: str
    model: str
    n_layers: int
    n_neurons: int
    kinds: tuple[Kind, ...]
    tokenizer: str
    base_url: str | None = None
    folder: str | None = None
    bundled: str | None = None
    licence: str = ""
    description: str = ""
    interesting: tuple[InterestingNeuron, ...] = field(default=(), compare=False)
    dictionary: Dictionary | None = None

    @property
    def unit(self) -> str:
        """What this dataset's units are called: "neuron", or "latent" for a dictionary."""
        return "neuron" if self.dictionary is None else "latent"

    @property
    def units(self) -> str:
        """The plural of `unit`."""
        return f"{self.unit}s"

    def label_of(self, kind: Kind) -> str:
        """Human words for a kind of this dataset's files ("related latents" for a dictionary)."""
        if kind is Kind.RELATED_NEURONS:
            return f"related {self.units}"
        return kind.label

    def layer_label(self, layer: int) -> str:
        """Human words for a layer: "layer 3", or the dictionary's hook point."""
        return f"layer {layer}" if self.dictionary is None else self.dictionary.hook_label(layer)

    @property
    def origin(self) -> str:
        """Where the files come from: network, folder or bundled."""
        return "bundled" if self.bundled else "folder" if self.folder else "network"

    def check(self, layer: int, neuron: int) -> None:
        """Raise NeuronOutOfRange unless (layer, neuron) is inside the dataset's shape."""
        if not 0 <= layer < self.n_layers:
            raise NeuronOutOfRange(
                f"{self.name} has layers 0-{self.n_layers - 1}; there is no layer {layer}"
            )
        if not 0 <= neuron < self.n_neurons:
            raise NeuronOutOfRange(
                f"{self.name} has {self.units} 0-{self.n_neurons - 1} per layer; there is no "
                f"{self.unit} {neuron}"
            )

    def to_spec(self) -> dict[str, Any]:
        """A JSON-ready description (as stored for user datasets and in bundled files)."""
        spec = asdict(self)
        spec["kinds"] = [k.value for k in self.kinds]
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Dataset:
        """The dataset a spec describes."""
        values = dict(spec)
        values["kinds"] = tuple(Kind(k) for k in values.get("kinds", ()))
        values["interesting"] = tuple(InterestingNeuron(**n) for n in values.get("interesting", ()))
        if values.get("dictionary") is not None:
            values["dictionary"] = Dictionary.from_spec(values["dictionary"])
        return cls(**values)


@cache
def _gpt2_xl_interesting() -> tuple[InterestingNeuron, ...]:
    text = resources.read_text("interesting", "gpt2-xl.json")
    return tuple(InterestingNeuron(**n) for n in json.loads(text)["neurons"])


def public_datasets() -> list[Dataset]:
    """The OpenAI datasets published with the paper."""
    return [
        Dataset(
            name="gpt2-xl",
            title="GPT-2 XL (OpenAI)",
            model="gpt2-xl",
            n_layers=48,
            n_neurons=6400,
            kinds=ALL_KINDS,
            tokenizer="gpt2",
            base_url=f"{PUBLIC_ROOT}/data",
            licence="MIT (openai/automated-interpretability)",
            description="The paper's dataset: activations, explanations, related neurons, tokens.",
            interesting=_gpt2_xl_interesting(),
        ),
        Dataset(
            name="gpt2-small",
            title="GPT-2 small (OpenAI)",
            model="gpt2",
            n_layers=12,
            n_neurons=3072,
            kinds=(Kind.ACTIVATIONS, Kind.EXPLANATIONS),
            tokenizer="gpt2",
            base_url=f"{PUBLIC_ROOT}/gpt2_small_data",
            licence="MIT (openai/automated-interpretability)",
            description="Activations and explanations only (no weight-based files).",
        ),
    ]


def bundled_dataset_files() -> list[Path]:
    """Read-only dataset stores shipped in the package (resources/datasets/*.sqlite3)."""
    files: list[Path] = resources.bundled_datasets()  # typed here: mypy cannot see the mapping
    return files


def read_bundled(path: Path) -> Dataset:
    """The dataset a bundled store describes (its `meta` entry "dataset")."""
    store = Store.open_read_only(path)
    try:
        spec = store.get_json("meta", "dataset")
    finally:
        store.close()
    if not isinstance(spec, dict):
        raise UnknownDataset(f"{path} does not describe a dataset")
    return Dataset.from_spec({**spec, "bundled": str(path)})


class Registry:
    """Every dataset the app knows: bundled first, then public, then the user's own.

    Lookups are answered from memory; the user's datasets are read from the store once and
    again only after `add` or `remove`.
    """

    def __init__(self, store: Store | None = None, bundled: list[Path] | None = None) -> None:
        self._store = store
        files = bundled_dataset_files() if bundled is None else bundled
        self._built_in = [*(read_bundled(p) for p in files), *public_datasets()]
        self._all: list[Dataset] | None = None
        self._by_name: dict[str, Dataset] = {}

    def all(self) -> list[Dataset]:
        """All datasets, the default first."""
        if self._all is None:
            user = []
            if self._store is not None:
                user = [Dataset.from_spec(spec) for _, spec in self._store.all_json("datasets")]
            self._all = [*self._built_in, *user]
            self._by_name = {d.name: d for d in reversed(self._all)}
        return list(self._all)

    def default(self) -> Dataset:
        """The dataset the app opens on: the bundled neuron sample if there is one (a bundled
        latent dataset sorts first by name, but neurons stay the default)."""
        datasets = self.all()
        return next((d for d in datasets if d.dictionary is None), datasets[0])

    def get(self, name: str) -> Dataset:
        """The dataset called `name`."""
        self.all()
        dataset = self._by_name.get(name)
        if dataset is None:
            known = ", ".join(d.name for d in self.all())
            raise UnknownDataset(f"no dataset named {name!r} (known: {known})")
        return dataset

    def add(self, dataset: Dataset) -> None:
        """Register a user dataset (a folder or an HTTP mirror) in the store."""
        if self._store is None:
            raise UnknownDataset("user datasets need a store")
        if any(d.name == dataset.name for d in self._built_in):
            raise UnknownDataset(f"{dataset.name!r} is a built-in dataset name")
        if not (dataset.folder or dataset.base_url):
            raise UnknownDataset("a user dataset needs a folder or a base URL")
        self._store.put_json("datasets", dataset.name, dataset.to_spec())
        self._all = None

    def remove(self, name: str) -> None:
        """Forget a user dataset (its stored files stay until the cache is cleared)."""
        if self._store is not None:
            self._store.delete_json("datasets", name)
            self._all = None
