"""Sparse dictionaries (SAEs and transcoders) read from their files alone, computed in numpy.

Three formats, read without their libraries (neuron_desk/builder/README.md has the details):

- **SAELens**: a folder with `cfg.json` and `sae_weights.safetensors`. `W_enc` (d_in, d_sae),
  `b_enc` (d_sae), `W_dec` (d_sae, d_out), `b_dec` (d_out); `threshold` (d_sae) for JumpReLU;
  `b_gate`, `r_mag`, `b_mag` (d_sae, no `b_enc`) for gated; `k` in cfg for TopK; `W_skip`
  (d_out, d_in) for a skip transcoder. The hook name is `metadata.hook_name` (SAELens 6) or
  `hook_name`/`hook_point` (older configs, whose TopK is `activation_fn_kwargs.k`).
- **EleutherAI sparsify**: a folder per hook point with `cfg.json` and `sae.safetensors`:
  `encoder.weight` (d_sae, d_in) — an `nn.Linear` weight, the *transpose* of SAELens's
  `W_enc` — `encoder.bias`, `W_dec` (d_sae, d_in), `b_dec` (d_in), `W_skip` (d_in, d_in) with
  `skip_connection`. TopK; the hook point is the folder's name (e.g. `layers.9`).
- **Gemma Scope**: `params.npz` (or `params.safetensors`) with `W_enc`, `b_enc`, `W_dec`,
  `b_dec`, `threshold` (lower-case `w_` accepted): JumpReLU, the input not shifted by `b_dec`.

`Sae.encode` follows each library's own encoder (SAELens `process_sae_in` + the architecture's
`encode`, sparsify `SparseCoder.encode`, Gemma Scope's `JumpReLUSAE.encode`), in float32.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from neuron_desk.core.errors import DictionaryFileError

Array = npt.NDArray[np.float32]

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
SAELENS_CFG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
GEMMA_SCOPE_FILES = ("params.npz", "params.safetensors")
_SAELENS_ARCHITECTURES = {
    # SAELens architecture name: (kind, architecture here, has W_skip)
    "standard": ("sae", "standard", False),
    "topk": ("sae", "topk", False),
    "jumprelu": ("sae", "jumprelu", False),
    "gated": ("sae", "gated", False),
    "transcoder": ("transcoder", "standard", False),
    "skip_transcoder": ("transcoder", "standard", True),
    "jumprelu_transcoder": ("transcoder", "jumprelu", False),
}
_LAYER_NORM_EPS = 1e-5


def _relu(x: Array) -> Array:
    return np.maximum(x, np.float32(0))


@dataclass(frozen=True, eq=False)
class Sae:
    """One sparse dictionary at one hook point: its weights (float32) and how it encodes.

    `kind` "sae" reconstructs its input; "transcoder" reads `hook_name` and predicts
    `hook_name_out` (its decoder's width `d_out` may differ from `d_in`).
    """

    architecture: str
    W_enc: Array  # (d_in, d_sae)
    W_dec: Array  # (d_sae, d_out)
    b_dec: Array  # (d_out,)
    b_enc: Array | None = None  # (d_sae,); None for gated
    hook_name: str = ""
    kind: str = "sae"
    hook_name_out: str = ""
    k: int | None = None
    threshold: Array | None = None
    b_gate: Array | None = None
    r_mag: Array | None = None
    b_mag: Array | None = None
    W_skip: Array | None = None  # (d_out, d_in)
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    model_name: str = ""
    format: str = "saelens"
    source: str = ""
    """The folder or file it was read from (for messages)."""

    @property
    def d_in(self) -> int:
        """The width of the activations it reads."""
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        """How many latents."""
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        """The width of what it writes (d_in for an SAE)."""
        return int(self.W_dec.shape[1])

    @cached_property
    def decoder_norms(self) -> Array:
        """The L2 norm of each decoder row (d_sae,)."""
        return np.asarray(np.linalg.norm(self.W_dec, axis=1), dtype=np.float32)

    @cached_property
    def _magnitude_weights(self) -> Array:
        assert self.r_mag is not None
        return np.asarray(self.W_enc * np.exp(self.r_mag), dtype=np.float32)

    def _normalized(self, x: Array) -> tuple[Array, Array | None, Array | None]:
        """The input after the run-time normalization, and what undoes it (scale, shift)."""
        if self.normalize_activations == "constant_norm_rescale":
            coefficient = np.float32(math.sqrt(self.d_in)) / np.linalg.norm(
                x, axis=-1, keepdims=True
            )
            return np.asarray(x * coefficient, dtype=np.float32), 1 / coefficient, None
        if self.normalize_activations == "layer_norm":
            mu = x.mean(axis=-1, keepdims=True)
            std = (x - mu).std(axis=-1, ddof=1, keepdims=True)  # torch.std: unbiased
            return np.asarray((x - mu) / (std + _LAYER_NORM_EPS), dtype=np.float32), std, mu
        return x, None, None

    def _input(self, x: npt.ArrayLike) -> Array:
        values = np.asarray(x, dtype=np.float32)
        if values.shape[-1:] != (self.d_in,):
            raise ValueError(
                f"{self.source or 'the dictionary'} reads vectors of width {self.d_in}, "
                f"not {values.shape[-1:]}"
            )
        return values

    def _pre(self, x: Array) -> Array:
        """The centred (and normalized) input the encoder multiplies."""
        normed, _, _ = self._normalized(x)
        if self.kind == "sae" and self.apply_b_dec_to_input:
            normed = normed - self.b_dec
        return normed

    def encode(self, x: npt.ArrayLike) -> Array:
        """Latent activations (..., d_sae) of activations x (..., d_in), in float32."""
        centred = self._pre(self._input(x))
        if self.architecture == "gated":
            assert self.b_gate is not None and self.b_mag is not None
            active = centred @ self.W_enc + self.b_gate > 0
            magnitude = _relu(centred @ self._magnitude_weights + self.b_mag)
            return np.asarray(np.where(active, magnitude, np.float32(0)), dtype=np.float32)
        assert self.b_enc is not None
        pre = np.asarray(centred @ self.W_enc + self.b_enc, dtype=np.float32)
        if self.architecture == "jumprelu":
            assert self.threshold is not None
            return np.asarray(np.where(pre > self.threshold, _relu(pre), 0), dtype=np.float32)
        if self.architecture == "topk":
            assert self.k is not None
            if self.rescale_acts_by_decoder_norm:
                pre = pre * self.decoder_norms
            top = np.argpartition(-pre, self.k - 1, axis=-1)[..., : self.k]
            out = np.zeros_like(pre)
            np.put_along_axis(out, top, _relu(np.take_along_axis(pre, top, axis=-1)), axis=-1)
            return out
        return _relu(pre)

    def decode(self, latents: npt.ArrayLike) -> Array:
        """The decoder's output `latents @ W_dec + b_dec` (..., d_out), before any run-time
        de-normalization and without a skip connection (see `reconstruct`)."""
        values = np.asarray(latents, dtype=np.float32)
        if self.rescale_acts_by_decoder_norm:
            values = values / self.decoder_norms
        return np.asarray(values @ self.W_dec + self.b_dec, dtype=np.float32)

    def reconstruct(self, x: npt.ArrayLike) -> Array:
        """The whole forward pass: what the dictionary predicts at its output for input x."""
        values = self._input(x)
        out = self.decode(self.encode(values))
        _, scale, shift = self._normalized(values)
        if scale is not None:
            out = out * scale
        if shift is not None:
            out = out + shift
        if self.W_skip is not None:
            out = out + values @ self.W_skip.T
        return np.asarray(out, dtype=np.float32)


# --- reading files ---


def _fail(source: Path | str, message: str, field_name: str = "") -> DictionaryFileError:
    return DictionaryFileError(message, path=field_name, source=str(source))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _fail(path, "not a JSON object")
    return value


def _safetensors_bf16(path: Path, name: str) -> Array:
    """A bfloat16 tensor (numpy has no bfloat16) widened to float32, from the raw file."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
        entry = header[name]
        start, end = entry["data_offsets"]
        handle.seek(8 + size + start)
        raw = np.frombuffer(handle.read(end - start), dtype="<u2")
    widened = raw.astype(np.uint32) << 16
    return widened.view(np.float32).reshape(entry["shape"])


def read_safetensors(path: Path) -> dict[str, Array]:
    """Every tensor of a .safetensors file as a float32 numpy array."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise _fail(path, "no such file")
    tensors: dict[str, Array] = {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 (not a dict)
                dtype = handle.get_slice(name).get_dtype()
                if dtype == "BF16":
                    tensors[name] = _safetensors_bf16(path, name)
                elif dtype in ("F16", "F32", "F64"):
                    tensors[name] = np.asarray(handle.get_tensor(name), dtype=np.float32)
                else:
                    raise _fail(path, f"tensor of type {dtype}, not a float", name)
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DictionaryFileError):
            raise
        raise _fail(path, f"not a readable safetensors file: {exc}") from exc
    return tensors


def _read_npz(path: Path) -> dict[str, Array]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not a readable .npz file: {exc}") from exc


def _tensor(tensors: Mapping[str, Array], name: str, shape: tuple[int, ...], source: Path) -> Array:
    if name not in tensors:
        raise _fail(source, f"missing tensor (has: {', '.join(sorted(tensors)) or 'none'})", name)
    value = tensors[name]
    if value.shape != shape:
        raise _fail(source, f"shape {list(value.shape)}, expected {list(shape)}", name)
    if not np.all(np.isfinite(value)):
        raise _fail(source, "holds NaN or infinite values", name)
    return np.ascontiguousarray(value, dtype=np.float32)


def _integer(cfg: Mapping[str, Any], name: str, source: Path, minimum: int = 1) -> int:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(source, f"expected an integer >= {minimum}, got {value!r}", name)
    return value


def _is_pre_6(cfg: Mapping[str, Any]) -> bool:
    metadata = cfg.get("metadata")
    version = cfg.get("sae_lens_version") or (
        metadata.get("sae_lens_version") if isinstance(metadata, dict) else None
    )
    if not isinstance(version, str):
        return True
    match = re.match(r"(\d+)", version)
    return match is None or int(match.group(1)) < 6


def _saelens_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """A cfg.json of any SAELens version in SAELens 6 terms (as `handle_pre_6_0_config`)."""
    if not _is_pre_6(cfg):
        return dict(cfg)
    renames = {"hook_point": "hook_name", "activation_fn_str": "activation_fn"}
    new = {renames.get(key, key): value for key, value in cfg.items()}
    new.setdefault("architecture", "standard")
    kwargs = new.get("activation_fn_kwargs") or {}
    if new.get("activation_fn") == "topk" and isinstance(kwargs, dict) and "k" in kwargs:
        new["architecture"] = "topk"
        new["k"] = kwargs["k"]
    normalize = new.get("normalize_activations")
    if isinstance(normalize, bool):
        new["normalize_activations"] = "expected_average_only_in" if normalize else "none"
    elif normalize is None:
        new["normalize_activations"] = "none"
    metadata = dict(new.get("metadata") or {})
    for key in ("hook_name", "model_name", "hook_name_out"):
        if key in new and key not in metadata:
            metadata[key] = new[key]
    new["metadata"] = metadata
    return new


def read_saelens(folder: Path) -> Sae:
    """An SAE or transcoder saved by SAELens (`cfg.json` + `sae_weights.safetensors`)."""
    cfg_path, weights_path = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    cfg = _saelens_cfg(_read_json(cfg_path))
    name = cfg.get("architecture")
    if name not in _SAELENS_ARCHITECTURES:
        known = ", ".join(_SAELENS_ARCHITECTURES)
        raise _fail(cfg_path, f"unknown architecture {name!r} (known: {known})", "architecture")
    kind, architecture, skip = _SAELENS_ARCHITECTURES[name]
    d_in, d_sae = _integer(cfg, "d_in", cfg_path), _integer(cfg, "d_sae", cfg_path)
    d_out = _integer(cfg, "d_out", cfg_path) if kind == "transcoder" and "d_out" in cfg else d_in
    normalize = cfg.get("normalize_activations", "none")
    if normalize not in NORMALIZATIONS:
        raise _fail(cfg_path, f"unknown normalization {normalize!r}", "normalize_activations")
    k = _integer(cfg, "k", cfg_path) if architecture == "topk" else None
    if k is not None and k > d_sae:
        raise _fail(cfg_path, f"k = {k} is more than d_sae = {d_sae}", "k")
    tensors = read_safetensors(weights_path)
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = np.exp(tensors["log_threshold"])
    scaling = tensors.get("scaling_factor")
    if scaling is not None and not np.allclose(scaling, 1.0):
        raise _fail(weights_path, "a fine-tuning scaling factor is not supported", "scaling_factor")
    found = cfg.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    hook = metadata.get("hook_name") or cfg.get("hook_name") or ""

    def vector(name: str, width: int = d_sae) -> Array:
        return _tensor(tensors, name, (width,), weights_path)

    gated = architecture == "gated"
    return Sae(
        architecture=architecture,
        kind=kind,
        W_enc=_tensor(tensors, "W_enc", (d_in, d_sae), weights_path),
        W_dec=_tensor(tensors, "W_dec", (d_sae, d_out), weights_path),
        b_dec=vector("b_dec", d_out),
        b_enc=None if gated else vector("b_enc"),
        threshold=vector("threshold") if architecture == "jumprelu" else None,
        b_gate=vector("b_gate") if gated else None,
        r_mag=vector("r_mag") if gated else None,
        b_mag=vector("b_mag") if gated else None,
        W_skip=_tensor(tensors, "W_skip", (d_out, d_in), weights_path) if skip else None,
        k=k,
        hook_name=str(hook),
        hook_name_out=str(metadata.get("hook_name_out") or ""),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)) and kind == "sae",
        normalize_activations=str(normalize),
        rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        model_name=str(metadata.get("model_name") or ""),
        format="saelens",
        source=str(folder),
    )


def read_sparsify(folder: Path) -> Sae:
    """A sparse coder saved by EleutherAI's sparsify (`cfg.json` + `sae.safetensors`)."""
    cfg_path, weights_path = folder / SPARSIFY_CFG, folder / SPARSIFY_WEIGHTS
    cfg = _read_json(cfg_path)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise _fail(cfg_path, f"unknown activation {activation!r} (known: topk)", "activation")
    d_in = _integer(cfg, "d_in", cfg_path)
    if cfg.get("num_latents"):
        d_sae = _integer(cfg, "num_latents", cfg_path)
    else:
        d_sae = d_in * _integer(cfg, "expansion_factor", cfg_path)
    k = _integer(cfg, "k", cfg_path)
    if k > d_sae:
        raise _fail(cfg_path, f"k = {k} is more than the {d_sae} latents", "k")
    transcoder = bool(cfg.get("transcode", False))
    tensors = read_safetensors(weights_path)
    encoder = _tensor(tensors, "encoder.weight", (d_sae, d_in), weights_path)
    skip = None
    if cfg.get("skip_connection"):
        skip = _tensor(tensors, "W_skip", (d_in, d_in), weights_path)
    model = ""
    run_config = folder.parent / "config.json"
    if run_config.is_file():
        with_model = _read_json(run_config)
        model = str(with_model.get("model", ""))
    return Sae(
        architecture="topk",
        kind="transcoder" if transcoder else "sae",
        W_enc=np.ascontiguousarray(encoder.T),
        b_enc=_tensor(tensors, "encoder.bias", (d_sae,), weights_path),
        W_dec=_tensor(tensors, "W_dec", (d_sae, d_in), weights_path),
        b_dec=_tensor(tensors, "b_dec", (d_in,), weights_path),
        W_skip=skip,
        k=k,
        hook_name=folder.name,
        hook_name_out=folder.name if transcoder else "",
        apply_b_dec_to_input=not transcoder,
        model_name=model,
        format="sparsify",
        source=str(folder),
    )


def _gemma_scope_hook(path: Path) -> str:
    """`blocks.L.hook_resid_post`/`hook_mlp_out` from a Gemma Scope path, or ""."""
    parts = [p.lower() for p in path.parts]
    layer = next((m.group(1) for p in reversed(parts) if (m := re.search(r"layer_(\d+)", p))), None)
    if layer is None:
        return ""
    if any("mlp" in p or "transcoder" in p for p in parts):
        return f"blocks.{layer}.hook_mlp_out"
    if any(re.search(r"(^|[-_])res", p) for p in parts):
        return f"blocks.{layer}.hook_resid_post"
    return ""


def read_gemma_scope(folder: Path, hook_name: str = "") -> Sae:
    """A Gemma Scope JumpReLU SAE (`params.npz` or `params.safetensors`)."""
    path = next((folder / n for n in GEMMA_SCOPE_FILES if (folder / n).is_file()), None)
    if path is None:
        raise _fail(folder, f"no {' or '.join(GEMMA_SCOPE_FILES)}")
    raw = _read_npz(path) if path.suffix == ".npz" else read_safetensors(path)
    tensors = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}
    if "W_enc" not in tensors or tensors["W_enc"].ndim != 2:
        raise _fail(path, "missing a 2-d encoder weight", "W_enc")
    d_in, d_sae = tensors["W_enc"].shape
    return Sae(
        architecture="jumprelu",
        W_enc=_tensor(tensors, "W_enc", (d_in, d_sae), path),
        b_enc=_tensor(tensors, "b_enc", (d_sae,), path),
        W_dec=_tensor(tensors, "W_dec", (d_sae, d_in), path),
        b_dec=_tensor(tensors, "b_dec", (d_in,), path),
        threshold=_tensor(tensors, "threshold", (d_sae,), path),
        hook_name=hook_name or _gemma_scope_hook(path),
        apply_b_dec_to_input=False,
        format="gemma-scope",
        source=str(folder),
    )


def dictionary_format(folder: Path) -> str:
    """The format of the dictionary in `folder`: saelens, sparsify or gemma-scope."""
    if (folder / SAELENS_WEIGHTS).is_file():
        return "saelens"
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    if any((folder / n).is_file() for n in GEMMA_SCOPE_FILES):
        return "gemma-scope"
    expected = ", ".join([SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, *GEMMA_SCOPE_FILES])
    raise _fail(folder, f"not a dictionary folder: it has none of {expected}")


def read_dictionary(folder: Path, hook_name: str = "") -> Sae:
    """The SAE or transcoder in `folder`, whatever its format; `hook_name` overrides the
    file's own (needed for a Gemma Scope folder whose path names no layer)."""
    if not folder.is_dir():
        raise _fail(folder, "no such folder")
    found = dictionary_format(folder)
    if found == "saelens":
        sae = read_saelens(folder)
    elif found == "sparsify":
        sae = read_sparsify(folder)
    else:
        sae = read_gemma_scope(folder, hook_name)
    if hook_name:
        sae = replace(sae, hook_name=hook_name)
    if not sae.hook_name:
        raise _fail(folder, "the files name no hook point: give one", "hook_name")
    return sae


# --- writing ---


def saelens_architecture(sae: Sae) -> str:
    """The SAELens architecture name of `sae`."""
    if sae.kind == "transcoder":
        if sae.W_skip is not None:
            return "skip_transcoder"
        return "jumprelu_transcoder" if sae.architecture == "jumprelu" else "transcoder"
    return sae.architecture


def save_saelens(sae: Sae, folder: Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write `sae` as SAELens 6 writes one: `cfg.json` and `sae_weights.safetensors`."""
    from safetensors.numpy import save_file

    if sae.kind == "transcoder" and sae.architecture not in ("standard", "jumprelu"):
        raise ValueError(f"SAELens has no {sae.architecture} transcoder")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    optional = {
        "b_enc": sae.b_enc,
        "threshold": sae.threshold,
        "b_gate": sae.b_gate,
        "r_mag": sae.r_mag,
        "b_mag": sae.b_mag,
        "W_skip": sae.W_skip,
    }
    tensors |= {name: value for name, value in optional.items() if value is not None}
    contiguous = {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in tensors.items()}
    save_file(contiguous, str(folder / SAELENS_WEIGHTS))
    meta: dict[str, Any] = {"sae_lens_version": "6.0.0", "sae_lens_training_version": "6.0.0"}
    meta |= {"hook_name": sae.hook_name, "model_name": sae.model_name}
    if sae.kind == "transcoder":
        meta["hook_name_out"] = sae.hook_name_out
    meta |= dict(metadata or {})
    cfg: dict[str, Any] = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": sae.normalize_activations,
        "reshape_activations": "none",
        "metadata": meta,
        "architecture": saelens_architecture(sae),
    }
    if sae.architecture == "topk":
        cfg |= {"k": sae.k, "rescale_acts_by_decoder_norm": sae.rescale_acts_by_decoder_norm}
    if sae.kind == "transcoder":
        cfg["d_out"] = sae.d_out
    (folder / SAELENS_CFG).write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
