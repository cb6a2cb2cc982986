"""The one module that touches torch and transformers: load a causal LM, read its MLP neurons.

A neuron's activation is the input of the MLP's down projection (Llama `down_proj`, GPT-2
`c_proj`, GPT-NeoX `dense_4h_to_h`, ...): `act(gate) * up` for SwiGLU, `gelu(c_fc)` for GPT-2.
A forward pre-hook reads it, and the forward pass stops after the last layer needed.
Everything leaves this module as numpy arrays, so the rest of the builder is plain Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from neuron_desk.builder.weights import MlpWeights

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
        for layer in layers:
            mlp = getattr(layer, "mlp", layer)
            down = next((getattr(mlp, n) for n in _DOWN_NAMES if hasattr(mlp, n)), None)
            if down is None:
                raise ValueError(f"cannot find the MLP down projection in {type(mlp).__name__}")
            self._down.append(down)

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

    def activations(
        self,
        ids: npt.NDArray[np.int32],
        layers: Sequence[int],
        neurons: dict[int, npt.NDArray[np.int64]] | None = None,
    ) -> dict[int, npt.NDArray[np.float32]]:
        """MLP activations of a batch (batch, seq_len): {layer: (batch, seq_len, neurons)}.

        `neurons[layer]`, when given, picks the neurons to return (in that order).
        """
        import torch

        wanted = sorted(set(layers))
        last = wanted[-1]
        captured: dict[int, npt.NDArray[np.float32]] = {}

        def hook_for(layer: int) -> Any:
            index = None
            if neurons is not None:
                index = torch.as_tensor(neurons[layer], dtype=torch.long)

            def hook(_module: Any, args: tuple[Any, ...]) -> None:
                values = args[0]
                if index is not None:
                    values = values.index_select(-1, index)
                captured[layer] = _to_numpy(values)
                if layer == last:
                    raise _Stop

            return hook

        handles = [self._down[layer].register_forward_pre_hook(hook_for(layer)) for layer in wanted]
        try:
            with torch.inference_mode():
                self.model(input_ids=torch.as_tensor(ids, dtype=torch.long), use_cache=False)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def mlp_weights(self) -> MlpWeights | None:
        """The weights for weight-based files, or None for an architecture we can't define."""
        config = self.model.config
        model_type = str(getattr(config, "model_type", ""))
        embedding = _to_numpy(self.model.get_input_embeddings().weight)
        output = self.model.get_output_embeddings()
        unembedding = embedding if output is None else _to_numpy(output.weight)
        if model_type == "gpt2":
            blocks = self.model.transformer.h
            return MlpWeights(
                architecture="gpt2",
                embedding=embedding,
                unembedding=unembedding,
                final_norm=_to_numpy(self.model.transformer.ln_f.weight),
                mlp_norms=[_to_numpy(b.ln_2.weight) for b in blocks],
                input_rows=[_to_numpy(b.mlp.c_fc.weight).T.copy() for b in blocks],
                down_columns=[_to_numpy(b.mlp.c_proj.weight) for b in blocks],
            )
        if model_type in _SWIGLU_TYPES:
            layers = self.model.model.layers
            return MlpWeights(
                architecture="swiglu",
                embedding=embedding,
                unembedding=unembedding,
                final_norm=_to_numpy(self.model.model.norm.weight),
                mlp_norms=[_to_numpy(b.post_attention_layernorm.weight) for b in layers],
                input_rows=[_to_numpy(b.mlp.gate_proj.weight) for b in layers],
                up_rows=[_to_numpy(b.mlp.up_proj.weight) for b in layers],
                down_columns=[_to_numpy(b.mlp.down_proj.weight).T.copy() for b in layers],
                norm_eps=float(getattr(config, "rms_norm_eps", 1e-6)),
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
