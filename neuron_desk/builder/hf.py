"""The one module that touches torch and transformers: load a causal LM, read its MLP neurons.

A neuron's activation is the input of the MLP's down projection (Llama `down_proj`, GPT-2
`c_proj`, GPT-NeoX `dense_4h_to_h`, ...): `act(gate) * up` for SwiGLU, `gelu(c_fc)` for GPT-2.
A forward pre-hook reads it, and the forward pass stops after the last layer needed;
`HfModel.capture` reads any module's input or output the same way (the latents' hook points).
Everything leaves this module as numpy arrays, so the rest of the builder is plain Python.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from neuron_desk.builder.records import UnitStats
from neuron_desk.builder.weights import (
    MlpWeights,
    Readout,
    WeightFiles,
    related_neurons,
    token_weights,
)
from neuron_desk.data.registry import Dictionary

Key = TypeVar("Key", bound=Hashable)

_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
_DOWN_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc_out", "fc2", "w2")
_SWIGLU_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


class _Stop(Exception):
    """Raised by the last hook: the rest of the forward pass is not needed."""


def _attribute(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _to_numpy(tensor: Any) -> npt.NDArray[np.float32]:
    return np.asarray(tensor.detach().float().cpu().numpy(), dtype=np.float32)


class HfModel:
    """A Hugging Face causal LM and its tokenizer, seen as MLP neurons."""

    dictionary: Dictionary | None = None
    """Its units are MLP neurons, not a dictionary's latents."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        layers = next(
            (found for p in _LAYER_PATHS if (found := _attribute(model, p)) is not None), None
        )
        if layers is None:
            raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
        self._down: list[Any] = []
        self._down_names: list[str] = []
        names = {id(module): name for name, module in model.named_modules()}
        for layer in layers:
            mlp = getattr(layer, "mlp", layer)
            down = next((getattr(mlp, n) for n in _DOWN_NAMES if hasattr(mlp, n)), None)
            if down is None:
                raise ValueError(f"cannot find the MLP down projection in {type(mlp).__name__}")
            self._down.append(down)
            self._down_names.append(names[id(down)])
        self._weights: MlpWeights | Literal[False] | None = None

    @property
    def n_layers(self) -> int:
        """How many layers (each with one MLP)."""
        return len(self._down)

    @property
    def n_neurons(self) -> int:
        """MLP neurons per layer (the down projection's input width)."""
        down = self._down[0]
        if type(down).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
            return int(down.weight.shape[0])
        return int(down.weight.shape[1])

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without special tokens."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def vocab(self) -> list[str]:
        """Every token id decoded alone to text (byte-level BPE: " the"), padded to the model."""
        size = max(len(self.tokenizer), int(self.model.config.vocab_size))
        known = len(self.tokenizer)
        return [
            str(self.tokenizer.decode([i], clean_up_tokenization_spaces=False))
            if i < known
            else f"<{i}>"
            for i in range(size)
        ]

    def capture(
        self, ids: npt.NDArray[np.int32], points: Mapping[Key, tuple[str, str]]
    ) -> dict[Key, npt.NDArray[np.float32]]:
        """What named modules see in a forward pass of a batch (batch, seq_len).

        `points[key]` is (module name, "input" or "output"), e.g. ("model.layers.9", "output")
        for the residual stream after block 9; the forward pass stops once all are read.
        """
        import torch

        captured: dict[Key, npt.NDArray[np.float32]] = {}

        def keep(key: Key, value: Any) -> None:
            if isinstance(value, tuple):
                value = value[0]
            captured[key] = _to_numpy(value)
            if len(captured) == len(points):
                raise _Stop

        def hook_for(key: Key, side: str) -> Any:
            if side == "input":
                return lambda _m, args, kwargs: keep(
                    key, args[0] if args else next(iter(kwargs.values()))
                )
            return lambda _m, _args, output: keep(key, output)

        handles = []
        for key, (name, side) in points.items():
            module = self.module(name)
            hook = hook_for(key, side)
            if side == "input":
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(hook))
        try:
            with torch.inference_mode():
                self.model(input_ids=torch.as_tensor(ids, dtype=torch.long), use_cache=False)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def module(self, name: str) -> Any:
        """The submodule called `name` (e.g. "model.layers.9.mlp"); KeyError if none."""
        try:
            return self.model.get_submodule(name)
        except AttributeError as exc:
            raise KeyError(f"{self.name} has no module {name!r}") from exc

    def activations(
        self,
        ids: npt.NDArray[np.int32],
        layers: Sequence[int],
        neurons: dict[int, npt.NDArray[np.int64]] | None = None,
        stats: Mapping[int, UnitStats] | None = None,
    ) -> dict[int, npt.NDArray[np.float32]]:
        """MLP activations of a batch (batch, seq_len): {layer: (batch, seq_len, neurons)}.

        `neurons[layer]`, when given, picks the neurons to return (in that order); `stats`,
        when given, counts how often every neuron of each layer is positive.
        """
        points = {layer: (self._down_names[layer], "input") for layer in sorted(set(layers))}
        captured = self.capture(ids, points)
        if stats is not None:
            for layer, values in captured.items():
                stats[layer].add_firing(values)
        if neurons is None:
            return captured
        return {layer: values[..., neurons[layer]] for layer, values in captured.items()}

    def readout(self) -> Readout:
        """The token embedding and how the residual stream becomes logits."""
        config = self.model.config
        model_type = str(getattr(config, "model_type", ""))
        embedding = _to_numpy(self.model.get_input_embeddings().weight)
        output = self.model.get_output_embeddings()
        unembedding = embedding if output is None else _to_numpy(output.weight)
        if model_type == "gpt2":
            norm = _to_numpy(self.model.transformer.ln_f.weight)
            return Readout("gpt2", embedding, unembedding, norm)
        if model_type in _SWIGLU_TYPES:
            norm = _to_numpy(self.model.model.norm.weight)
            eps = float(getattr(config, "rms_norm_eps", 1e-6))
            return Readout("swiglu", embedding, unembedding, norm, eps)
        return Readout("linear", embedding, unembedding, np.ones(embedding.shape[1], np.float32))

    def weight_files(
        self,
        layer: int,
        neurons: Sequence[int],
        vocab: Sequence[str],
        n_tokens: int,
        n_related: int,
    ) -> WeightFiles | None:
        """Top tokens by weight and related neurons of some neurons of a layer (None: the
        architecture has no definition)."""
        if self._weights is None:
            self._weights = self.mlp_weights() or False
        if self._weights is False:
            return None
        by_weight = token_weights(self._weights, layer, neurons, vocab, n_tokens)
        return by_weight, related_neurons(self._weights, layer, neurons, n_related)

    def mlp_weights(self) -> MlpWeights | None:
        """The weights for weight-based files, or None for an architecture we can't define."""
        readout = self.readout()  # the embedding, unembedding and final norm
        embedding, unembedding = readout.embedding, readout.unembedding
        if readout.architecture == "gpt2":
            blocks = self.model.transformer.h
            return MlpWeights(
                architecture="gpt2",
                embedding=embedding,
                unembedding=unembedding,
                final_norm=readout.final_norm,
                mlp_norms=[_to_numpy(b.ln_2.weight) for b in blocks],
                input_rows=[_to_numpy(b.mlp.c_fc.weight).T.copy() for b in blocks],
                down_columns=[_to_numpy(b.mlp.c_proj.weight) for b in blocks],
            )
        if readout.architecture == "swiglu":
            layers = self.model.model.layers
            return MlpWeights(
                architecture="swiglu",
                embedding=embedding,
                unembedding=unembedding,
                final_norm=readout.final_norm,
                mlp_norms=[_to_numpy(b.post_attention_layernorm.weight) for b in layers],
                input_rows=[_to_numpy(b.mlp.gate_proj.weight) for b in layers],
                up_rows=[_to_numpy(b.mlp.up_proj.weight) for b in layers],
                down_columns=[_to_numpy(b.mlp.down_proj.weight).T.copy() for b in layers],
                norm_eps=readout.norm_eps,
            )
        return None


def load_model(path: Path, name: str | None = None, threads: int | None = None) -> HfModel:
    """Load a Hugging Face model directory, or a GGUF file transformers can read, as float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    folder, gguf = (path.parent, path.name) if path.suffix == ".gguf" else (path, None)
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    return HfModel(model, tokenizer, name or path.name)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that computed the numbers."""
    import importlib.metadata

    versions = {}
    for package in ("torch", "transformers", "tokenizers", "gguf", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
