"""A model seen through sparse dictionaries: its "layers" are hook points, its units latents.

`load_dictionary_model(model, dictionary, base)` reads a registry `Dictionary`'s weights
folders (relative to `base`) and gives a `DictionaryModel`, which the builder builds like a
model of MLP neurons: `activations` runs the model, reads each hook point's module output (or,
for a transcoder, its input), stops the forward pass there and encodes; `weight_files` gives
top tokens by weight (W_E · W_enc, W_dec → logits) and related latents (cosine similarity
of decoder rows and of encoder columns, within a hook point).

Hook points are the model's module names ("model.layers.9", "model.layers.9.mlp");
TransformerLens names as SAELens writes them ("blocks.9.hook_resid_post") and sparsify's
hookpoints ("layers.9", "layers.9.mlp") are mapped to them for Llama-style and GPT-2 models.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from neuron_desk.builder.dictionaries import Sae, read_dictionary
from neuron_desk.builder.hf import HfModel
from neuron_desk.builder.records import UnitStats
from neuron_desk.builder.weights import Readout, WeightFiles, latent_related, latent_token_weights
from neuron_desk.core.errors import DictionaryFileError
from neuron_desk.data.registry import Dictionary

Point = tuple[str, str]
"""(module name, "input" or "output")."""

_TL_HOOK = re.compile(
    r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_mlp_in|"
    r"ln2\.hook_normalized|hook_mlp_out|hook_attn_out)$"
)
_LAYOUTS = {
    # layers, MLP, attention, norm before the MLP, token embedding, resid_pre of block 0
    "llama": ("model.layers", "mlp", "self_attn", "post_attention_layernorm",
              "model.embed_tokens", "model.embed_tokens"),
    "gpt2": ("transformer.h", "mlp", "attn", "ln_2", "transformer.wte", "transformer.drop"),
}  # fmt: skip


def _layout(model: HfModel) -> tuple[str, ...] | None:
    for layout in _LAYOUTS.values():
        try:
            model.module(layout[0])
        except KeyError:
            continue
        return layout
    return None


def _equivalents(model: HfModel, hook: str) -> list[Point]:
    """The (module, side) places of the model that hold what a hook name names."""
    suffix = re.search(r":(input|output)$", hook)
    if suffix:
        return [(hook[: suffix.start()], suffix.group(1))]
    match = _TL_HOOK.match(hook)
    layout = _layout(model)
    if hook == "hook_embed" and layout:
        return [(layout[4], "output")]
    if match and layout:
        layers, mlp, attn, norm, _, first = layout
        layer, site = int(match.group(1)), match.group(2)
        block = f"{layers}.{layer}"
        if site == "hook_resid_pre":
            before = f"{layers}.{layer - 1}" if layer > 0 else first
            return [(before, "output"), (block, "input")]
        if site == "hook_resid_post":
            return [(block, "output"), (f"{layers}.{layer + 1}", "input")]
        if site == "hook_resid_mid":
            return [(f"{block}.{norm}", "input")]
        if site in ("hook_mlp_in", "ln2.hook_normalized"):
            return [(f"{block}.{norm}", "output"), (f"{block}.{mlp}", "input")]
        if site == "hook_mlp_out":
            return [(f"{block}.{mlp}", "output")]
        return [(f"{block}.{attn}", "output")]
    prefix = str(getattr(model.model, "base_model_prefix", "") or "")
    names = [hook] + ([f"{prefix}.{hook}"] if prefix else [])
    return [(name, side) for name in names for side in ("output", "input")]


def resolve_hook(model: HfModel, hook: str, side: str, source: str = "") -> Point:
    """Where `hook` is read in `model`, preferring `side` ("output" for an SAE's hook point,
    "input" for a transcoder's); DictionaryFileError if the model has no such module."""
    candidates = _equivalents(model, hook)
    ordered = sorted(candidates, key=lambda point: point[1] != side)
    for name, found_side in ordered:
        try:
            model.module(name)
        except KeyError:
            continue
        return name, found_side
    raise DictionaryFileError(
        f"{model.name} has no module for hook point {hook!r}", path="hook_name", source=source
    )


def hook_point_name(point: Point, kind: str) -> str:
    """How a place is written in `Dictionary.hook_points`: the module's name, with
    ":input"/":output" only when the side is not the kind's default."""
    name, side = point
    default = "input" if kind == "transcoder" else "output"
    return name if side == default else f"{name}:{side}"


def dictionary_from_folders(
    model: HfModel, folders: Sequence[Path], hooks: Sequence[str] | None = None
) -> Dictionary:
    """The registry description of dictionaries in `folders` (one per hook point, same
    width and architecture), with absolute weights paths; `hooks` overrides their hook names."""
    if not folders:
        raise ValueError("no dictionary folders given")
    if hooks is not None and len(hooks) != len(folders):
        raise ValueError(f"{len(folders)} dictionary folders but {len(hooks)} hook points")
    saes = [read_dictionary(f, hooks[i] if hooks else "") for i, f in enumerate(folders)]
    first = saes[0]
    for sae in saes[1:]:
        for name in ("kind", "architecture", "d_sae", "d_in", "k"):
            if getattr(sae, name) != getattr(first, name):
                raise DictionaryFileError(
                    f"{getattr(sae, name)!r} differs from {getattr(first, name)!r} in "
                    f"{first.source}: one dataset needs dictionaries of one shape",
                    path=name,
                    source=sae.source,
                )
    in_side = "input" if first.kind == "transcoder" else "output"
    points = [resolve_hook(model, s.hook_name, in_side, s.source) for s in saes]
    outputs: tuple[str, ...] = ()
    if first.kind == "transcoder":
        outputs = tuple(
            hook_point_name(
                resolve_hook(model, s.hook_name_out or s.hook_name, "output", s.source), "sae"
            )
            for s in saes
        )
    formats = sorted({s.format for s in saes})
    return Dictionary(
        kind=first.kind,
        architecture=first.architecture,
        d_in=first.d_in,
        d_sae=first.d_sae,
        hook_points=tuple(hook_point_name(p, first.kind) for p in points),
        weights=tuple(str(Path(f).resolve()) for f in folders),
        outputs=outputs,
        k=first.k,
        source=f"{', '.join(formats)} files",
    )


def _check(sae: Sae, dictionary: Dictionary, folder: Path) -> None:
    expected = {
        "kind": dictionary.kind,
        "architecture": dictionary.architecture,
        "d_in": dictionary.d_in,
        "d_sae": dictionary.d_sae,
        "k": dictionary.k,
    }
    for name, value in expected.items():
        found = getattr(sae, name)
        if found != value:
            raise DictionaryFileError(
                f"{name} is {found!r}, but the dataset's dictionary says {value!r}",
                path=name,
                source=str(folder),
            )


def load_dictionary_model(model: HfModel, dictionary: Dictionary, base: Path) -> DictionaryModel:
    """The model seen through `dictionary`, whose weights folders are relative to `base`.

    Refused with DictionaryFileError (naming the folder and field): no weights, files that
    do not match the dictionary's description, a hook point the model lacks, or a width
    (d_in, d_out) that is not the width of the model's activations there.
    """
    if not dictionary.weights:
        raise DictionaryFileError(
            "the dictionary lists no weights folders", path="weights", source=str(base)
        )
    if len(dictionary.weights) != len(dictionary.hook_points):
        raise DictionaryFileError(
            f"{len(dictionary.weights)} weights folders for "
            f"{len(dictionary.hook_points)} hook points",
            path="weights",
            source=str(base),
        )
    in_side = "input" if dictionary.kind == "transcoder" else "output"
    folders, saes, points, targets = [], [], [], []
    for i, weights in enumerate(dictionary.weights):
        folder = (base / weights).resolve()
        sae = read_dictionary(folder, dictionary.hook_points[i])
        _check(sae, dictionary, folder)
        points.append(resolve_hook(model, dictionary.hook_points[i], in_side, str(folder)))
        if dictionary.kind == "transcoder":
            out = dictionary.outputs[i] if i < len(dictionary.outputs) else sae.hook_name_out
            targets.append(resolve_hook(model, out, "output", str(folder)))
        else:
            targets.append(points[-1])
        folders.append(folder)
        saes.append(sae)
    _check_widths(model, saes, points, targets)
    described = replace(dictionary, weights=tuple(str(f) for f in folders))
    return DictionaryModel(model, described, saes, points, targets)


def _check_widths(
    model: HfModel, saes: Sequence[Sae], points: Sequence[Point], targets: Sequence[Point]
) -> None:
    """Run one token through the model and compare the widths the dictionaries expect."""
    wanted = {("in", i): p for i, p in enumerate(points)}
    wanted |= {("out", i): p for i, p in enumerate(targets)}
    seen = model.capture(np.zeros((1, 1), dtype=np.int32), wanted)
    for i, sae in enumerate(saes):
        for side, width, name in (("in", sae.d_in, "d_in"), ("out", sae.d_out, "d_out")):
            actual = seen[side, i].shape[-1]
            if actual != width:
                module, where = (points if side == "in" else targets)[i]
                raise DictionaryFileError(
                    f"{name} is {width}, but the {where} of {module} in {model.name} is "
                    f"{actual} wide",
                    path=name,
                    source=sae.source,
                )


def _digest(saes: Sequence[Sae]) -> str:
    digest = hashlib.sha256()
    for sae in saes:
        digest.update(sae.W_enc.tobytes())
        digest.update(sae.W_dec.tobytes())
    return digest.hexdigest()[:16]


class DictionaryModel:
    """A `HfModel` read through one dictionary per hook point: the builder's `NeuronModel`
    whose layer i is hook point i and whose neurons are that dictionary's latents."""

    def __init__(
        self,
        model: HfModel,
        dictionary: Dictionary,
        saes: Sequence[Sae],
        points: Sequence[Point],
        targets: Sequence[Point],
    ) -> None:
        self.model = model
        self.dictionary: Dictionary | None = dictionary
        self.saes = list(saes)
        self.points = list(points)
        self.targets = list(targets)
        self.name = f"{model.name}+{dictionary.kind}@{_digest(saes)}"
        self._readout: Readout | None = None

    @property
    def n_layers(self) -> int:
        """How many hook points."""
        return len(self.saes)

    @property
    def n_neurons(self) -> int:
        """Latents per hook point."""
        return self.saes[0].d_sae

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without special tokens."""
        return self.model.encode(text)

    def vocab(self) -> list[str]:
        """Every token id decoded alone to text."""
        return self.model.vocab()

    def activations(
        self,
        ids: npt.NDArray[np.int32],
        layers: Sequence[int],
        neurons: dict[int, npt.NDArray[np.int64]] | None = None,
        stats: Mapping[int, UnitStats] | None = None,
    ) -> dict[int, npt.NDArray[np.float32]]:
        """Latent activations of a batch (batch, seq_len): {hook index: (batch, seq_len,
        latents)}; `neurons[i]` picks latents; `stats` also gets firing counts and the
        reconstruction error of every latent."""
        wanted = sorted(set(layers))
        places: dict[tuple[str, int], Point] = {("in", i): self.points[i] for i in wanted}
        if stats is not None:
            places |= {("out", i): self.targets[i] for i in wanted}
        seen = self.model.capture(ids, places)
        result = {}
        for i in wanted:
            latents = self.saes[i].encode(seen["in", i])
            if stats is not None:
                stats[i].add_firing(latents)
                prediction = self.saes[i].decode(latents)
                full = self.saes[i].reconstruct(seen["in", i]) if self._needs_full(i) else None
                stats[i].add_reconstruction(seen["out", i], prediction if full is None else full)
            result[i] = latents if neurons is None else latents[..., neurons[i]]
        return result

    def _needs_full(self, layer: int) -> bool:
        sae = self.saes[layer]
        return sae.W_skip is not None or sae.normalize_activations in (
            "constant_norm_rescale",
            "layer_norm",
        )

    def readout(self) -> Readout:
        """The model's embedding and logit readout (read once)."""
        if self._readout is None:
            self._readout = self.model.readout()
        return self._readout

    def weight_files(
        self,
        layer: int,
        neurons: Sequence[int],
        vocab: Sequence[str],
        n_tokens: int,
        n_related: int,
    ) -> WeightFiles | None:
        """Top tokens by weight and related latents of some latents of hook point `layer`
        (None when neither its input nor its output is as wide as the residual stream)."""
        sae = self.saes[layer]
        readout = self.readout()
        width = readout.embedding.shape[1]
        encoder = sae.W_enc if sae.d_in == width else None
        decoder = sae.W_dec if sae.d_out == width else None
        if encoder is None and decoder is None:
            return None
        by_weight = latent_token_weights(readout, encoder, decoder, neurons, vocab, n_tokens)
        related = latent_related(layer, sae.W_enc, sae.W_dec, neurons, n_related)
        return by_weight, related
