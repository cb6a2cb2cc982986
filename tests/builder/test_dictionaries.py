"""The SAE readers: files written the way each library writes them, encoders checked against
reference computations written here from the libraries' own formulas (torch, float64).

SAELens 6 saves `cfg.json` (`SAEConfig.to_dict()`) and `sae_weights.safetensors`
(`safetensors.torch.save_file(state_dict)`); sparsify saves `cfg.json` (`{**cfg.to_dict(),
"d_in": d_in}`) and `sae.safetensors` (`safetensors.torch.save_model(sparse_coder)`); Gemma
Scope ships `params.npz`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuron_desk.builder.dictionaries import (
    read_dictionary,
    read_saelens,
    read_safetensors,
    save_saelens,
)
from neuron_desk.core.errors import CodecError, DictionaryFileError

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

D_IN, D_SAE = 16, 40


def _gen(seed: int) -> Any:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, scale: float = 1.0) -> Any:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float32) * scale


def _inputs(seed: int = 99) -> np.ndarray:
    return _randn(3, 7, D_IN, seed=seed, scale=2.0).numpy()


def _saelens_cfg(architecture: str, **extra: Any) -> dict[str, Any]:
    """What SAELens 6's `SAEConfig.to_dict()` writes."""
    return {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.12.1",
            "sae_lens_training_version": "6.12.1",
            "model_name": "tiny",
            "hook_name": "blocks.1.hook_resid_post",
            "context_size": 16,
            "prepend_bos": True,
        },
        "architecture": architecture,
        **extra,
    }


def _save_saelens(folder: Path, cfg: dict[str, Any], state: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_torch.save_file(
        {k: v.contiguous() for k, v in state.items()}, str(folder / "sae_weights.safetensors")
    )
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def _base_state(seed: int = 0) -> dict[str, Any]:
    return {
        "W_enc": _randn(D_IN, D_SAE, seed=seed, scale=0.5),
        "W_dec": _randn(D_SAE, D_IN, seed=seed + 1, scale=0.5),
        "b_dec": _randn(D_IN, seed=seed + 2, scale=0.3),
        "b_enc": _randn(D_SAE, seed=seed + 3, scale=0.3),
    }


def _close(got: np.ndarray, expected: Any) -> None:
    reference = expected.detach().double().numpy()
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)


# --- SAELens ---


def test_saelens_standard_is_relu_of_the_centred_input(tmp_path: Path) -> None:
    state = _base_state()
    folder = _save_saelens(tmp_path / "std", _saelens_cfg("standard"), state)
    sae = read_dictionary(folder)
    assert (sae.architecture, sae.kind, sae.format) == ("standard", "sae", "saelens")
    assert (sae.d_in, sae.d_sae, sae.hook_name) == (D_IN, D_SAE, "blocks.1.hook_resid_post")
    x = torch.from_numpy(_inputs()).double()
    s = {k: v.double() for k, v in state.items()}
    expected = torch.relu((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
    got = sae.encode(_inputs())
    _close(got, expected)
    assert 0 < np.count_nonzero(got) < got.size
    _close(sae.decode(got), torch.from_numpy(got).double() @ s["W_dec"] + s["b_dec"])


def test_saelens_without_decoder_bias_on_the_input(tmp_path: Path) -> None:
    state = _base_state(1)
    cfg = _saelens_cfg("standard", apply_b_dec_to_input=False)
    sae = read_dictionary(_save_saelens(tmp_path / "nob", cfg, state))
    x = torch.from_numpy(_inputs()).double()
    expected = torch.relu(x @ state["W_enc"].double() + state["b_enc"].double())
    _close(sae.encode(_inputs()), expected)


def _topk_reference(pre: Any, k: int) -> Any:
    """SAELens's TopK: the k largest pre-activations, ReLU'd, the rest zero."""
    values, indices = torch.topk(pre, k=k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


@pytest.mark.parametrize("rescale", [False, True])
def test_saelens_topk_keeps_the_k_largest(tmp_path: Path, rescale: bool) -> None:
    state = _base_state(2)
    cfg = _saelens_cfg("topk", k=5, rescale_acts_by_decoder_norm=rescale)
    sae = read_dictionary(_save_saelens(tmp_path / "topk", cfg, state))
    assert (sae.architecture, sae.k) == ("topk", 5)
    s = {k: v.double() for k, v in state.items()}
    x = torch.from_numpy(_inputs()).double()
    pre = (x - s["b_dec"]) @ s["W_enc"] + s["b_enc"]
    if rescale:
        pre = pre * s["W_dec"].norm(dim=-1)
    got = sae.encode(_inputs())
    _close(got, _topk_reference(pre, 5))
    assert (np.count_nonzero(got, axis=-1) <= 5).all()
    if rescale:
        expected = (torch.from_numpy(got).double() / s["W_dec"].norm(dim=-1)) @ s["W_dec"]
        _close(sae.decode(got), expected + s["b_dec"])


def test_saelens_jumprelu_zeroes_below_the_threshold(tmp_path: Path) -> None:
    state = _base_state(3) | {"threshold": torch.rand(D_SAE, generator=_gen(7)) * 0.8}
    sae = read_dictionary(_save_saelens(tmp_path / "jr", _saelens_cfg("jumprelu"), state))
    s = {k: v.double() for k, v in state.items()}
    x = torch.from_numpy(_inputs()).double()
    pre = (x - s["b_dec"]) @ s["W_enc"] + s["b_enc"]
    expected = torch.relu(pre) * (pre > s["threshold"])
    got = sae.encode(_inputs())
    _close(got, expected)
    between = (pre > 0) & (pre <= s["threshold"])
    assert between.any() and (got[between.numpy()] == 0).all()


def test_saelens_gated_uses_the_gate_and_the_magnitude_path(tmp_path: Path) -> None:
    state = _base_state(4)
    del state["b_enc"]  # a gated SAE has no b_enc
    state |= {
        "b_gate": _randn(D_SAE, seed=11, scale=0.3),
        "r_mag": _randn(D_SAE, seed=12, scale=0.2),
        "b_mag": _randn(D_SAE, seed=13, scale=0.3),
    }
    sae = read_dictionary(_save_saelens(tmp_path / "gated", _saelens_cfg("gated"), state))
    assert sae.architecture == "gated" and sae.b_enc is None
    s = {k: v.double() for k, v in state.items()}
    x = torch.from_numpy(_inputs()).double() - s["b_dec"]
    active = (x @ s["W_enc"] + s["b_gate"] > 0).double()
    magnitude = torch.relu(x @ (s["W_enc"] * s["r_mag"].exp()) + s["b_mag"])
    _close(sae.encode(_inputs()), active * magnitude)


def test_saelens_transcoder_reads_its_input_without_the_decoder_bias(tmp_path: Path) -> None:
    d_out = 12
    state = _base_state(5)
    state["W_dec"] = _randn(D_SAE, d_out, seed=21)
    state["b_dec"] = _randn(d_out, seed=22)
    state["W_skip"] = _randn(d_out, D_IN, seed=23, scale=0.1)
    cfg = _saelens_cfg("skip_transcoder", d_out=d_out, apply_b_dec_to_input=False)
    cfg["metadata"] |= {"hook_name": "blocks.1.ln2.hook_normalized"}
    cfg["metadata"]["hook_name_out"] = "blocks.1.hook_mlp_out"
    sae = read_dictionary(_save_saelens(tmp_path / "tc", cfg, state))
    assert (sae.kind, sae.d_out, sae.hook_name_out) == ("transcoder", 12, "blocks.1.hook_mlp_out")
    s = {k: v.double() for k, v in state.items()}
    x = torch.from_numpy(_inputs()).double()
    latents = torch.relu(x @ s["W_enc"] + s["b_enc"])
    _close(sae.encode(_inputs()), latents)
    _close(sae.reconstruct(_inputs()), latents @ s["W_dec"] + s["b_dec"] + x @ s["W_skip"].T)


@pytest.mark.parametrize("mode", ["constant_norm_rescale", "layer_norm"])
def test_saelens_run_time_normalization(tmp_path: Path, mode: str) -> None:
    state = _base_state(6)
    cfg = _saelens_cfg("standard", normalize_activations=mode)
    sae = read_dictionary(_save_saelens(tmp_path / mode, cfg, state))
    s = {k: v.double() for k, v in state.items()}
    x = torch.from_numpy(_inputs()).double()
    if mode == "constant_norm_rescale":
        coefficient = D_IN**0.5 / x.norm(dim=-1, keepdim=True)
        normed, undo = x * coefficient, lambda y: y / coefficient
    else:
        mu = x.mean(dim=-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True)
        normed, undo = (x - mu) / (std + 1e-5), lambda y: y * std + mu
    latents = torch.relu((normed - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
    _close(sae.encode(_inputs()), latents)
    _close(sae.reconstruct(_inputs()), undo(latents @ s["W_dec"] + s["b_dec"]))


def test_a_pre_6_saelens_config_with_topk_in_its_activation_kwargs(tmp_path: Path) -> None:
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "hook_name": "blocks.2.hook_resid_pre",
        "hook_layer": 2,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 3},
        "normalize_activations": False,
        "sae_lens_training_version": "3.13.0",
        "model_name": "tiny",
    }
    state = _base_state(7)
    sae = read_dictionary(_save_saelens(tmp_path / "old", cfg, state))
    assert (sae.architecture, sae.k, sae.hook_name) == ("topk", 3, "blocks.2.hook_resid_pre")
    s = {k: v.double() for k, v in state.items()}
    pre = (torch.from_numpy(_inputs()).double() - s["b_dec"]) @ s["W_enc"] + s["b_enc"]
    _close(sae.encode(_inputs()), _topk_reference(pre, 3))


def test_a_jumprelu_training_checkpoint_with_a_log_threshold(tmp_path: Path) -> None:
    threshold = torch.rand(D_SAE, generator=_gen(8)) * 0.5 + 0.05
    state = _base_state(8) | {"log_threshold": threshold.log()}
    sae = read_dictionary(_save_saelens(tmp_path / "log", _saelens_cfg("jumprelu"), state))
    assert sae.threshold is not None
    np.testing.assert_allclose(sae.threshold, threshold.numpy(), rtol=1e-6)


def test_saved_saelens_folders_read_back_the_same(tmp_path: Path) -> None:
    state = _base_state(9)
    sae = read_dictionary(_save_saelens(tmp_path / "a", _saelens_cfg("topk", k=4), state))
    save_saelens(sae, tmp_path / "b", metadata={"trained_with": "test"})
    cfg = json.loads((tmp_path / "b" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 4 and cfg["d_in"] == D_IN
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cfg["metadata"]["trained_with"] == "test"
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    with safetensors_torch.safe_open(str(tmp_path / "b" / "sae_weights.safetensors"), "pt") as f:
        assert set(f.keys()) == {"W_enc", "W_dec", "b_enc", "b_dec"}
        assert list(f.get_tensor("W_enc").shape) == [D_IN, D_SAE]
    again = read_saelens(tmp_path / "b")
    np.testing.assert_array_equal(again.encode(_inputs()), sae.encode(_inputs()))


# --- sparsify ---


class _SparseCoderLike(torch.nn.Module):  # type: ignore[misc]
    """The parameters of sparsify's SparseCoder, under their names."""

    def __init__(self, d_in: int, d_sae: int, skip: bool) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(d_in, d_sae)
        self.W_dec = torch.nn.Parameter(_randn(d_sae, d_in, seed=31))
        self.b_dec = torch.nn.Parameter(_randn(d_in, seed=32, scale=0.3))
        self.W_skip = torch.nn.Parameter(_randn(d_in, d_in, seed=33)) if skip else None


def _save_sparsify(
    root: Path, hookpoint: str, *, transcode: bool = False, dtype: Any = None
) -> tuple[Path, Any]:
    torch.manual_seed(3)
    coder = _SparseCoderLike(D_IN, D_SAE, skip=False)
    if dtype is not None:
        coder = coder.to(dtype)
    folder = root / hookpoint
    folder.mkdir(parents=True)
    safetensors_torch.save_model(coder, str(folder / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": 6,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": transcode,
        "d_in": D_IN,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (root / "config.json").write_text(json.dumps({"model": "tiny-llama", "hookpoints": []}))
    return folder, coder


def _sparsify_reference(coder: Any, x: Any, transcode: bool) -> Any:
    """sparsify's encode: relu(linear(x - b_dec)) → top k (values and indices)."""
    w, b = coder.encoder.weight.double(), coder.encoder.bias.double()
    if not transcode:
        x = x - coder.b_dec.double()
    pre = torch.relu(torch.nn.functional.linear(x, w, b))
    values, indices = pre.topk(6, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def test_sparsify_encoder_weight_is_the_transpose_of_w_enc(tmp_path: Path) -> None:
    folder, coder = _save_sparsify(tmp_path, "layers.1")
    sae = read_dictionary(folder)
    assert (sae.format, sae.architecture, sae.k, sae.kind) == ("sparsify", "topk", 6, "sae")
    assert (sae.hook_name, sae.model_name) == ("layers.1", "tiny-llama")
    assert sae.W_enc.shape == (D_IN, D_SAE)  # encoder.weight is (D_SAE, D_IN)
    with torch.no_grad():
        x = torch.from_numpy(_inputs()).double()
        expected = _sparsify_reference(coder, x, transcode=False)
        _close(sae.encode(_inputs()), expected)
        decoded = expected @ coder.W_dec.double() + coder.b_dec.double()
        _close(sae.decode(sae.encode(_inputs())), decoded)


def test_a_sparsify_transcoder_does_not_centre_its_input(tmp_path: Path) -> None:
    folder, coder = _save_sparsify(tmp_path, "layers.1.mlp", transcode=True)
    sae = read_dictionary(folder)
    assert sae.kind == "transcoder" and sae.hook_name_out == "layers.1.mlp"
    with torch.no_grad():
        x = torch.from_numpy(_inputs()).double()
        _close(sae.encode(_inputs()), _sparsify_reference(coder, x, transcode=True))


def test_bfloat16_weights_are_widened_exactly(tmp_path: Path) -> None:
    folder, coder = _save_sparsify(tmp_path, "layers.0", dtype=torch.bfloat16)
    tensors = read_safetensors(folder / "sae.safetensors")
    assert tensors["W_dec"].dtype == np.float32
    np.testing.assert_array_equal(tensors["W_dec"], coder.W_dec.detach().float().numpy())
    np.testing.assert_array_equal(
        tensors["encoder.weight"], coder.encoder.weight.detach().float().numpy()
    )
    assert read_dictionary(folder).W_enc.shape == (D_IN, D_SAE)


# --- Gemma Scope ---


def _gemma_params(seed: int = 40) -> dict[str, np.ndarray]:
    state = {k: v.numpy() for k, v in _base_state(seed).items()}
    state["threshold"] = (torch.rand(D_SAE, generator=_gen(seed)) * 0.6).numpy()
    return state


@pytest.mark.parametrize("suffix", ["npz", "safetensors"])
def test_gemma_scope_is_jumprelu_on_the_raw_input(tmp_path: Path, suffix: str) -> None:
    params = _gemma_params()
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_5" / "width_16k" / "average_l0_71"
    folder.mkdir(parents=True)
    if suffix == "npz":
        np.savez(folder / "params.npz", **params)
    else:
        lower = {("w_" + k[2:] if k.startswith("W_") else k): v for k, v in params.items()}
        safetensors_torch.save_file(
            {k: torch.from_numpy(v) for k, v in lower.items()}, str(folder / "params.safetensors")
        )
    sae = read_dictionary(folder)
    assert (sae.format, sae.architecture) == ("gemma-scope", "jumprelu")
    assert sae.hook_name == "blocks.5.hook_resid_post" and not sae.apply_b_dec_to_input
    p = {k: torch.from_numpy(v).double() for k, v in params.items()}
    pre = torch.from_numpy(_inputs()).double() @ p["W_enc"] + p["b_enc"]
    _close(sae.encode(_inputs()), (pre > p["threshold"]) * torch.relu(pre))


def test_a_gemma_scope_folder_naming_no_layer_needs_a_hook(tmp_path: Path) -> None:
    np.savez(tmp_path / "params.npz", **_gemma_params())
    with pytest.raises(DictionaryFileError, match="hook_name"):
        read_dictionary(tmp_path)
    assert read_dictionary(tmp_path, "model.layers.3").hook_name == "model.layers.3"


# --- malformed files ---


def _message(excinfo: Any) -> str:
    return str(excinfo.value)


def test_a_missing_tensor_is_named_with_its_file(tmp_path: Path) -> None:
    state = _base_state()
    del state["b_enc"]
    folder = _save_saelens(tmp_path / "m", _saelens_cfg("standard"), state)
    with pytest.raises(DictionaryFileError) as excinfo:
        read_dictionary(folder)
    assert "sae_weights.safetensors" in _message(excinfo)
    assert "b_enc" in _message(excinfo) and "missing" in _message(excinfo)
    assert isinstance(excinfo.value, CodecError) and excinfo.value.path == "b_enc"


def test_a_jumprelu_without_threshold_is_refused(tmp_path: Path) -> None:
    folder = _save_saelens(tmp_path / "j", _saelens_cfg("jumprelu"), _base_state())
    with pytest.raises(DictionaryFileError, match="threshold"):
        read_dictionary(folder)


def test_a_wrong_shape_is_named(tmp_path: Path) -> None:
    state = _base_state()
    state["W_enc"] = state["W_enc"].T  # (d_sae, d_in): sparsify's layout in a SAELens file
    folder = _save_saelens(tmp_path / "s", _saelens_cfg("standard"), state)
    with pytest.raises(DictionaryFileError) as excinfo:
        read_dictionary(folder)
    assert excinfo.value.path == "W_enc"
    assert f"[{D_SAE}, {D_IN}]" in _message(excinfo) and f"[{D_IN}, {D_SAE}]" in _message(excinfo)


def test_an_unknown_architecture_is_named(tmp_path: Path) -> None:
    folder = _save_saelens(tmp_path / "u", _saelens_cfg("hypersparse"), _base_state())
    with pytest.raises(DictionaryFileError) as excinfo:
        read_dictionary(folder)
    assert excinfo.value.path == "architecture" and "cfg.json" in _message(excinfo)
    assert "'hypersparse'" in _message(excinfo)


def test_topk_needs_a_sensible_k(tmp_path: Path) -> None:
    for k in (None, 0, D_SAE + 1):
        cfg = _saelens_cfg("topk") | ({} if k is None else {"k": k})
        folder = _save_saelens(tmp_path / f"k{k}", cfg, _base_state())
        with pytest.raises(DictionaryFileError) as excinfo:
            read_dictionary(folder)
        assert excinfo.value.path == "k"


def test_broken_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DictionaryFileError, match="not a dictionary folder"):
        read_dictionary(tmp_path)
    with pytest.raises(DictionaryFileError, match="no such folder"):
        read_dictionary(tmp_path / "absent")
    folder = _save_saelens(tmp_path / "b", _saelens_cfg("standard"), _base_state())
    (folder / "sae_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(DictionaryFileError, match="not a readable safetensors file"):
        read_dictionary(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(DictionaryFileError, match=r"cfg\.json.*not JSON"):
        read_dictionary(folder)
    folder, _ = _save_sparsify(tmp_path / "sp", "layers.0")
    cfg = json.loads((folder / "cfg.json").read_text()) | {"activation": "groupmax"}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DictionaryFileError) as excinfo:
        read_dictionary(folder)
    assert excinfo.value.path == "activation"


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    state = _base_state()
    state["W_dec"][3, 2] = float("nan")
    folder = _save_saelens(tmp_path / "n", _saelens_cfg("standard"), state)
    with pytest.raises(DictionaryFileError, match="NaN") as excinfo:
        read_dictionary(folder)
    assert excinfo.value.path == "W_dec"


def test_encode_refuses_the_wrong_width(tmp_path: Path) -> None:
    sae = read_dictionary(_save_saelens(tmp_path / "w", _saelens_cfg("standard"), _base_state()))
    with pytest.raises(ValueError, match="width 16"):
        sae.encode(np.zeros((2, D_IN + 1), dtype=np.float32))
