"""neuron-explainer's loaders: `load_neuron`, `load_neuron_async` and the token connections.

Given the original's default dataset paths (the public GPT-2 XL and GPT-2 small data), they
read through neuron-desk's facade: the user's store first, then the bundled sample, then the
network (offline, a miss says so at once). Any other `dataset_path` is read as it is: a local
folder (a mirror in the public layout) or an HTTP(S) base URL, `{path}/{layer}/{neuron}.json`.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from neuron_desk.core import codec
from neuron_desk.core.errors import NotFound
from neuron_desk.core.model import (
    NeuronRecord,
    NeuronSimulationResults,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)

T = TypeVar("T")

_AZURE = "https://openaipublic.blob.core.windows.net/"
_DATASETS = {
    "neuron-explainer/data": "gpt2-xl",
    "neuron-explainer/gpt2_small_data": "gpt2-small",
}
_KINDS = {
    "collated-activations": "activations",
    "related-tokens/activation-based": "tokens-by-activation",
    "related-tokens/weight-based": "tokens-by-weight",
    "explanations": "explanations",
}
DEFAULT_ACTIVATIONS = _AZURE + "neuron-explainer/data/collated-activations"
DEFAULT_TOKENS_BY_ACTIVATION = _AZURE + "neuron-explainer/data/related-tokens/activation-based"
DEFAULT_TOKENS_BY_WEIGHT = _AZURE + "neuron-explainer/data/related-tokens/weight-based"


def _known(dataset_path: str) -> tuple[str, str] | None:
    """(dataset, kind) of one of the public datasets' paths, else None."""
    path = dataset_path.rstrip("/").replace("az://openaipublic/", _AZURE)
    if not path.startswith(_AZURE):
        return None
    rest = path[len(_AZURE) :]
    for prefix, dataset in _DATASETS.items():
        for folder, kind in _KINDS.items():
            if rest == f"{prefix}/{folder}":
                return dataset, kind
    return None


async def _through_desk(dataset: str, kind: str, layer: int, neuron: int) -> Any:
    # The facade is the layer above; imported here, at call time (pyproject's contracts say why).
    from neuron_desk.core.refs import NeuronRef
    from neuron_desk.data.registry import Kind
    from neuron_desk.desk import Desk

    desk = Desk.open()
    try:
        fetched = await desk.service.get(NeuronRef(dataset, layer, neuron), Kind(kind))
        return fetched.value
    finally:
        await desk.aclose()
        desk.close()


async def _read(
    dataset_path: str, layer: int | str, neuron: int | str, cls: type[T], suffix: str = ".json"
) -> T:
    known = _known(dataset_path)
    if known is not None:
        value: T = await _through_desk(known[0], known[1], int(layer), int(neuron))
        return value
    location = "/".join([dataset_path.rstrip("/"), str(layer), f"{neuron}{suffix}"])
    if location.startswith(("http://", "https://")):

        def get() -> bytes:
            with urllib.request.urlopen(location, timeout=60) as response:
                data: bytes = response.read()
                return data

        text: str | bytes = await asyncio.to_thread(get)
    else:
        text = await asyncio.to_thread(Path(location).read_bytes)
    if suffix == ".jsonl":
        text = (text.decode("utf-8") if isinstance(text, bytes) else text).split("\n", 1)[0]
    return codec.loads(text, cls, location)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to the end from sync code, also inside a running loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    out: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            out.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=work, name="load_neuron")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def load_neuron(
    layer_index: str | int,
    neuron_index: str | int,
    dataset_path: str = DEFAULT_ACTIVATIONS,
) -> NeuronRecord:
    """A neuron's activation records (GPT-2 XL by default)."""
    return _run(lambda: _read(dataset_path, layer_index, neuron_index, NeuronRecord))


async def load_neuron_async(
    layer_index: str | int,
    neuron_index: str | int,
    dataset_path: str = "az://openaipublic/neuron-explainer/data/collated-activations",
) -> NeuronRecord:
    """`load_neuron` for async code."""
    return await _read(dataset_path, layer_index, neuron_index, NeuronRecord)


def load_token_lookup_table_connections_of_neuron(
    layer_index: str | int,
    neuron_index: str | int,
    dataset_path: str = DEFAULT_TOKENS_BY_ACTIVATION,
) -> TokenLookupTableSummaryOfNeuron:
    """The tokens that most activate a neuron, with their average activations."""
    return _run(
        lambda: _read(dataset_path, layer_index, neuron_index, TokenLookupTableSummaryOfNeuron)
    )


def load_token_weight_connections_of_neuron(
    layer_index: str | int,
    neuron_index: str | int,
    dataset_path: str = DEFAULT_TOKENS_BY_WEIGHT,
) -> WeightBasedSummaryOfNeuron:
    """The tokens most connected to a neuron by its weights (input and output side)."""
    return _run(lambda: _read(dataset_path, layer_index, neuron_index, WeightBasedSummaryOfNeuron))


async def load_neuron_explanations_async(
    explanations_path: str, layer_index: str | int, neuron_index: str | int
) -> NeuronSimulationResults | None:
    """A neuron's scored explanations (`{path}/{layer}/{neuron}.jsonl`); None if it has none."""
    try:
        return await _read(
            explanations_path, layer_index, neuron_index, NeuronSimulationResults, ".jsonl"
        )
    except (FileNotFoundError, NotFound):
        return None


def load_neuron_explanations(
    explanations_path: str, layer_index: str | int, neuron_index: str | int
) -> NeuronSimulationResults | None:
    """`load_neuron_explanations_async` for sync code."""
    return _run(
        lambda: load_neuron_explanations_async(explanations_path, layer_index, neuron_index)
    )
