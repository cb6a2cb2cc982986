"""The bundled dictionary's files: SAELens format, as packaging/train_dictionary.py writes them.

Read with the standard library and numpy only (a safetensors file is an 8-byte header length,
a JSON header, then the raw tensors), so the check needs neither safetensors nor torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

FOLDER = (
    Path(__file__).resolve().parents[1]
    / "resources/dictionaries/smollm2-135m-instruct-topk/model.layers.9"
)
D_IN, D_SAE, K = 576, 4608, 32


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a float32 safetensors file, as numpy arrays."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        start, stop = info["data_offsets"]
        raw = data[8 + length + start : 8 + length + stop]
        tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(info["shape"])
    return tensors


def test_cfg_is_a_saelens_topk_config() -> None:
    cfg = json.loads((FOLDER / "cfg.json").read_text())
    assert cfg["architecture"] == "topk"
    assert (cfg["d_in"], cfg["d_sae"], cfg["k"]) == (D_IN, D_SAE, K)
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["model_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert cfg["metadata"]["hook_name"] == "blocks.9.hook_resid_post"
    assert cfg["hook_name"] == cfg["metadata"]["hook_name"]


def test_weights_have_saelens_names_and_shapes() -> None:
    path = FOLDER / "sae_weights.safetensors"
    assert path.stat().st_size <= 25 * 2**20
    tensors = read_safetensors(path)
    assert {name: t.shape for name, t in tensors.items()} == {
        "W_enc": (D_IN, D_SAE),
        "b_enc": (D_SAE,),
        "W_dec": (D_SAE, D_IN),
        "b_dec": (D_IN,),
    }
    assert all(np.isfinite(t).all() for t in tensors.values())
    # sparsify renormalises decoder rows before every step; the saved weights are its
    # schedule-free average of those iterates, so rows are at most (about) unit length.
    norms = np.linalg.norm(tensors["W_dec"], axis=1)
    assert norms.min() > 0.5 and norms.max() < 1.02


def test_report_states_reconstruction_quality() -> None:
    report = json.loads((FOLDER / "report.json").read_text())
    assert report["k"] == report["l0"] == K
    assert 0.5 < report["fraction_of_variance_explained"] <= 1.0
    assert 0 <= report["dead_latents"] <= report["d_sae"] == D_SAE
    assert report["encoder_check_max_abs_diff"] < 1e-4
    assert report["held_out_tokens"] > 0


@pytest.mark.parametrize("name", ["cfg.json", "sae_weights.safetensors", "report.json"])
def test_files_are_shipped(name: str) -> None:
    assert (FOLDER / name).is_file()


def test_conversion_reproduces_sparsify_encoder_on_random_weights() -> None:
    """The script's sparsify -> SAELens mapping gives sparsify's latents (SAELens's TopK)."""
    torch = pytest.importorskip("torch")
    sparsify = pytest.importorskip("sparsify")
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "packaging/train_dictionary.py"
    spec = importlib.util.spec_from_file_location("train_dictionary", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    torch.manual_seed(0)
    sae = sparsify.Sae(64, sparsify.SaeConfig(num_latents=256, k=8))
    with torch.no_grad():
        sae.encoder.bias.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
    x = torch.randn(100, 64)
    tensors = script.saelens_tensors(sae)
    assert tensors["W_enc"].shape == (64, 256) and tensors["W_dec"].shape == (256, 64)
    with torch.no_grad():
        ours = script.saelens_encode(tensors, 8, x)
        theirs = script.sparsify_dense(sae, x)
    assert int((ours > 0).sum(-1).max()) <= 8
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    cfg = script.saelens_cfg(sae, "corpus")
    assert (cfg["d_in"], cfg["d_sae"], cfg["k"]) == (64, 256, 8)
