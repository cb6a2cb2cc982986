"""Latent datasets: a tiny random Llama (and GPT-2) read through random SAEs and transcoders,
checked against a direct computation: forward pass → hidden state at the hook → an encoder
written here from the SAELens/sparsify formulas."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuron_desk.builder.dictionaries import Sae, save_saelens
from neuron_desk.core import codec
from neuron_desk.core.errors import DictionaryFileError
from neuron_desk.core.model import (
    NeuronRecord,
    RelatedNeurons,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data import registry
from neuron_desk.data.registry import Dictionary, Kind
from neuron_desk.data.store import Store
from tests.builder.test_builder import _corpus, _tiny, top_mean_tokens

D_MODEL, D_SAE, K = 32, 48, 4
DEAD, DENSE = (5, 17), 9


def _topk_sae(hook: str, seed: int, **changes: Any) -> Sae:
    rng = np.random.default_rng(seed)
    b_enc = rng.normal(0, 0.1, D_SAE).astype(np.float32)
    b_enc[list(DEAD)] = -1e4  # never among the top k: dead
    b_enc[DENSE] = 1e4  # always the largest: fires on every token
    values: dict[str, Any] = {
        "architecture": "topk",
        "W_enc": rng.normal(0, 0.5, (D_MODEL, D_SAE)).astype(np.float32),
        "b_enc": b_enc,
        "W_dec": rng.normal(0, 0.3, (D_SAE, D_MODEL)).astype(np.float32),
        "b_dec": rng.normal(0, 0.1, D_MODEL).astype(np.float32),
        "k": K,
        "hook_name": hook,
        "model_name": "tiny-llama",
    }
    return Sae(**(values | changes))


def _reference_topk(sae: Sae, x: np.ndarray) -> np.ndarray:
    """SAELens TopK from its formula: relu of the k largest of (x - b_dec) @ W_enc + b_enc."""
    pre = (x.astype(np.float64) - sae.b_dec) @ sae.W_enc.astype(np.float64) + sae.b_enc
    out = np.zeros_like(pre)
    top = np.argsort(-pre, axis=-1)[..., :K]
    np.put_along_axis(out, top, np.maximum(np.take_along_axis(pre, top, axis=-1), 0), axis=-1)
    return out


def _hidden(hf: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Residual stream after block 1 (hidden_states[2]) and block 2's MLP output, directly."""
    import torch

    seen: dict[str, Any] = {}
    mlp = hf.model.model.layers[2].mlp
    handle = mlp.register_forward_hook(lambda _m, _a, out: seen.__setitem__("mlp", out))
    try:
        with torch.no_grad():
            out = hf.model(input_ids=torch.as_tensor(ids), output_hidden_states=True)
    finally:
        handle.remove()
    return {
        "blocks.1.hook_resid_post": out.hidden_states[2].numpy(),
        "blocks.2.hook_mlp_out": seen["mlp"].numpy(),
    }


def _write(tmp_path: Path, saes: list[Sae]) -> list[Path]:
    folders = []
    for sae in saes:
        folder = tmp_path / "dictionaries" / "tiny-topk" / sae.hook_name
        save_saelens(sae, folder)
        folders.append(folder)
    return folders


def _build_latents(hf: Any, tmp_path: Path, folders: list[Path], **options: Any) -> Any:
    from neuron_desk.builder import BuildOptions, DatasetInfo, build_dataset
    from neuron_desk.builder.latents import dictionary_from_folders, load_dictionary_model

    dictionary = dictionary_from_folders(hf, folders)
    model = load_dictionary_model(hf, dictionary, tmp_path)
    info = DatasetInfo(name="tiny", title="Tiny SAE", model=hf.name, tokenizer="none")
    defaults: dict[str, Any] = {"seq_len": 16, "max_sequences": 30, "batch_size": 7, "seed": 5}
    out = tmp_path / "datasets" / "tiny-sae.sqlite3"
    result = build_dataset(
        model, _corpus(tmp_path), out, tmp_path / "work", info, BuildOptions(**(defaults | options))
    )
    return model, result


def _load(store: Store, kind: Kind, layer: int, latent: int, cls: type) -> Any:
    stored = store.get_file(NeuronRef("tiny", layer, latent), kind.value)
    assert stored is not None, (kind, layer, latent)
    return codec.loads(stored.text, cls)


def test_hook_names_map_to_the_models_modules() -> None:
    from neuron_desk.builder.latents import resolve_hook

    llama, gpt2 = _tiny("llama"), _tiny("gpt2")
    cases = [
        (llama, "blocks.1.hook_resid_post", "output", ("model.layers.1", "output")),
        (llama, "blocks.2.hook_resid_pre", "output", ("model.layers.1", "output")),
        (llama, "blocks.0.hook_resid_pre", "output", ("model.embed_tokens", "output")),
        (llama, "blocks.2.hook_mlp_out", "output", ("model.layers.2.mlp", "output")),
        (llama, "blocks.2.ln2.hook_normalized", "input", ("model.layers.2.mlp", "input")),
        (
            llama,
            "blocks.2.hook_mlp_in",
            "output",
            ("model.layers.2.post_attention_layernorm", "output"),
        ),
        (llama, "blocks.0.hook_attn_out", "output", ("model.layers.0.self_attn", "output")),
        (llama, "layers.1", "output", ("model.layers.1", "output")),  # sparsify
        (llama, "layers.1.mlp", "input", ("model.layers.1.mlp", "input")),
        (llama, "model.layers.2", "output", ("model.layers.2", "output")),
        (llama, "model.layers.2.mlp:input", "output", ("model.layers.2.mlp", "input")),
        (gpt2, "blocks.1.hook_resid_post", "output", ("transformer.h.1", "output")),
        (gpt2, "blocks.0.hook_resid_pre", "output", ("transformer.drop", "output")),
        (gpt2, "blocks.1.hook_mlp_out", "output", ("transformer.h.1.mlp", "output")),
        (gpt2, "h.2", "output", ("transformer.h.2", "output")),  # sparsify on GPT-2
    ]
    for model, hook, side, expected in cases:
        assert resolve_hook(model, hook, side) == expected, hook
    with pytest.raises(DictionaryFileError, match=r"no module for hook point 'blocks\.7\.hook"):
        resolve_hook(llama, "blocks.7.hook_resid_post", "output", "cfg.json")


def test_latent_records_match_a_direct_encode_of_the_hidden_state(tmp_path: Path) -> None:
    hf = _tiny("llama")
    saes = [_topk_sae("blocks.1.hook_resid_post", 1), _topk_sae("blocks.2.hook_mlp_out", 2)]
    _, result = _build_latents(hf, tmp_path, _write(tmp_path, saes))
    out = result.path
    dataset = registry.read_bundled(out)
    assert dataset.unit == "latent" and (dataset.n_layers, dataset.n_neurons) == (2, D_SAE)
    assert dataset.dictionary == Dictionary(
        kind="sae",
        architecture="topk",
        d_in=D_MODEL,
        d_sae=D_SAE,
        hook_points=("model.layers.1", "model.layers.2.mlp"),
        weights=(
            "../dictionaries/tiny-topk/blocks.1.hook_resid_post",
            "../dictionaries/tiny-topk/blocks.2.hook_mlp_out",
        ),
        k=K,
        source="saelens files",
    )
    assert dataset.layer_label(0) == "SAE at model.layers.1"
    assert set(dataset.kinds) == {
        Kind.ACTIVATIONS,
        Kind.TOKENS_BY_ACTIVATION,
        Kind.TOKENS_BY_WEIGHT,
        Kind.RELATED_NEURONS,
    }
    store = Store.open_read_only(out)
    sequences = np.array(store.get_json("meta", "sequences"))
    hidden = _hidden(hf, sequences)
    vocab = hf.vocab()
    index = {tuple(vocab[t] for t in row): i for i, row in enumerate(sequences)}
    try:
        for layer, sae in enumerate(saes):
            latents = _reference_topk(sae, hidden[sae.hook_name])
            assert (np.count_nonzero(latents, axis=-1) <= K).all()
            for latent in (0, DENSE, 30, 47):
                acts = latents[:, :, latent]
                record = _load(store, Kind.ACTIVATIONS, layer, latent, NeuronRecord)
                assert record.neuron_id.layer_index == layer
                for r in record.most_positive_activation_records:
                    expected = acts[index[tuple(r.tokens)]]
                    assert r.activations == pytest.approx(expected, rel=1e-4, abs=1e-4)
                seq_max = acts.max(axis=1)
                top = [index[tuple(r.tokens)] for r in record.most_positive_activation_records]
                assert list(seq_max[top]) == pytest.approx(sorted(seq_max, reverse=True), rel=1e-4)
                flat = acts.ravel()
                assert record.mean == pytest.approx(flat.mean(), rel=1e-4, abs=1e-6)
                table = _load(
                    store, Kind.TOKENS_BY_ACTIVATION, layer, latent, TokenLookupTableSummaryOfNeuron
                )
                best, means = top_mean_tokens(sequences, flat, len(vocab), 5)
                assert table.average_activations[:5] == pytest.approx(
                    means[best], rel=1e-4, abs=1e-6
                )

            dead = _load(
                store, Kind.TOKENS_BY_ACTIVATION, layer, DEAD[0], TokenLookupTableSummaryOfNeuron
            )
            assert dead.tokens == []  # never fired: no token has a mean activation to list
            report = store.get_json("meta", "build")["latents"]["layers"][str(layer)]
            firing = np.count_nonzero(latents.reshape(-1, D_SAE) > 0, axis=0)
            assert report["hook_point"] == ("model.layers.1", "model.layers.2.mlp")[layer]
            assert report["dead_units"] == [int(i) for i in np.flatnonzero(firing == 0)]
            assert set(DEAD) <= set(report["dead_units"])
            assert report["dense_units"] == [int(i) for i in np.flatnonzero(firing > 0.1 * 480)]
            assert DENSE in report["dense_units"] and report["tokens"] == 480
            assert report["mean_l0"] == pytest.approx(firing.sum() / 480, abs=1e-3)
            x = hidden[sae.hook_name].reshape(-1, D_MODEL).astype(np.float64)
            error = x - (latents.reshape(-1, D_SAE) @ sae.W_dec + sae.b_dec)
            fvu = (error**2).sum() / ((x - x.mean(0)) ** 2).sum()
            assert report["fvu"] == pytest.approx(fvu, rel=1e-3)
    finally:
        store.close()
    assert result.latents["layers"]["0"]["dead"] == len(
        store_dead := result.latents["layers"]["0"]["dead_units"]
    ) and set(DEAD) <= set(store_dead)


def test_latent_weight_files_follow_their_definition(tmp_path: Path) -> None:
    hf = _tiny("llama")
    import torch

    sae = _topk_sae("blocks.1.hook_resid_post", 3)
    _build_latents(hf, tmp_path, _write(tmp_path, [sae]), neurons=(2, 11, DENSE))
    store = Store.open_read_only(tmp_path / "datasets" / "tiny-sae.sqlite3")
    vocab = hf.vocab()
    embed = hf.model.model.embed_tokens.weight.detach().numpy().astype(np.float64)
    try:
        summary = _load(store, Kind.TOKENS_BY_WEIGHT, 0, 11, WeightBasedSummaryOfNeuron)
        inputs = embed @ sae.W_enc[:, 11]
        order = np.argsort(-inputs)
        assert summary.input_positive.tokens[:3] == [vocab[i] for i in order[:3]]
        assert summary.input_positive.strengths[:3] == pytest.approx(inputs[order[:3]], rel=1e-4)
        assert summary.input_negative.strengths[0] == pytest.approx(inputs.min(), rel=1e-4)
        with torch.no_grad():
            direction = torch.from_numpy(sae.W_dec[11])
            logits = hf.model.lm_head(hf.model.model.norm(direction)).numpy()
        assert summary.output_positive.tokens[0] == vocab[int(logits.argmax())]
        assert summary.output_positive.strengths[0] == pytest.approx(float(logits.max()), rel=1e-4)
        assert summary.output_negative.strengths[0] == pytest.approx(float(logits.min()), rel=1e-4)

        related = _load(store, Kind.RELATED_NEURONS, 0, 11, RelatedNeurons)
        assert related.c_proj is not None and related.c_fc is not None
        rows = sae.W_dec / np.linalg.norm(sae.W_dec, axis=1, keepdims=True)
        cosine = rows @ rows[11]
        cosine[11] = 0.0
        best = np.argsort(-cosine)[:20]
        assert related.c_proj.top_positive_neurons == [f"0_{i}" for i in best if cosine[i] > 0]
        assert related.c_proj.top_positive_weights[0] == pytest.approx(cosine[best[0]], rel=1e-5)
        assert related.c_proj.top_negative_neurons[0] == f"0_{int(np.argmin(cosine))}"
        assert "0_11" not in related.c_proj.top_positive_neurons + related.c_fc.top_positive_neurons
        columns = sae.W_enc / np.linalg.norm(sae.W_enc, axis=0, keepdims=True)
        reading = columns.T @ columns[:, 11]
        reading[11] = 0.0
        assert related.c_fc.top_positive_neurons[0] == f"0_{int(np.argmax(reading))}"
        stored = [r.index for r in store.stored_neurons("tiny", Kind.ACTIVATIONS.value)]
        assert stored == [2, DENSE, 11]
    finally:
        store.close()


def test_a_transcoder_reads_the_mlp_input(tmp_path: Path) -> None:
    hf = _tiny("llama")  # skips without torch or transformers (which brings safetensors)
    import torch
    from safetensors.numpy import save_file

    sae = _topk_sae("layers.1.mlp", 4)
    folder = tmp_path / "tc" / "layers.1.mlp"  # a sparsify transcoder (TopK)
    folder.mkdir(parents=True)
    tensors = {"encoder.weight": sae.W_enc.T.copy(), "encoder.bias": sae.b_enc}
    save_file(tensors | {"W_dec": sae.W_dec, "b_dec": sae.b_dec}, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "num_latents": D_SAE, "k": K, "transcode": True, "d_in": D_MODEL}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    from neuron_desk.builder.latents import dictionary_from_folders, load_dictionary_model

    dictionary = dictionary_from_folders(hf, [folder])
    assert dictionary.kind == "transcoder"
    assert dictionary.hook_points == ("model.layers.1.mlp",)
    assert dictionary.outputs == ("model.layers.1.mlp",)
    model = load_dictionary_model(hf, dictionary, tmp_path)
    ids = np.array([hf.encode(" the cat sat on a mat and the dogs")], dtype=np.int32)
    seen: dict[str, Any] = {}
    mlp = hf.model.model.layers[1].mlp
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.__setitem__("in", args[0]))
    try:
        with torch.no_grad():
            hf.model(input_ids=torch.as_tensor(ids))
    finally:
        handle.remove()
    x = seen["in"].numpy().astype(np.float64)
    pre = x @ sae.W_enc + sae.b_enc  # a transcoder's input is not centred by b_dec
    expected = np.zeros_like(pre)
    top = np.argsort(-pre, axis=-1)[..., :K]
    np.put_along_axis(expected, top, np.maximum(np.take_along_axis(pre, top, -1), 0), -1)
    got = model.activations(ids, [0], {0: np.array([DENSE, 3, 40])})[0]
    np.testing.assert_allclose(got, expected[..., [DENSE, 3, 40]], rtol=1e-4, atol=1e-4)


def test_a_dictionary_wider_or_narrower_than_the_model_is_refused(tmp_path: Path) -> None:
    from neuron_desk.builder.latents import dictionary_from_folders, load_dictionary_model

    hf = _tiny("llama")
    rng = np.random.default_rng(0)
    narrow = _topk_sae(
        "blocks.1.hook_resid_post",
        5,
        W_enc=rng.normal(size=(24, D_SAE)).astype(np.float32),
        W_dec=rng.normal(size=(D_SAE, 24)).astype(np.float32),
        b_dec=np.zeros(24, np.float32),
    )
    folder = tmp_path / "narrow"
    save_saelens(narrow, folder)
    with pytest.raises(DictionaryFileError) as excinfo:
        load_dictionary_model(hf, dictionary_from_folders(hf, [folder]), tmp_path)
    message = str(excinfo.value)
    assert excinfo.value.path == "d_in" and str(folder) in message
    assert "d_in is 24" in message and "32 wide" in message

    good = tmp_path / "good"
    save_saelens(_topk_sae("blocks.1.hook_resid_post", 6), good)
    described = dictionary_from_folders(hf, [good])
    wrong = Dictionary(**{**described.__dict__, "d_sae": 64})
    with pytest.raises(
        DictionaryFileError, match="d_sae is 48, but the dataset's dictionary says 64"
    ):
        load_dictionary_model(hf, wrong, tmp_path)
    empty = Dictionary(**{**described.__dict__, "weights": ()})
    with pytest.raises(DictionaryFileError, match="no weights"):
        load_dictionary_model(hf, empty, tmp_path)
    relative = Dictionary(**{**described.__dict__, "weights": ("good",)})
    assert load_dictionary_model(hf, relative, tmp_path).n_neurons == D_SAE


def test_the_command_line_builds_latents(tmp_path: Path, capsys: Any) -> None:
    from neuron_desk.builder.__main__ import main

    hf = _tiny("llama")
    model_folder = tmp_path / "tiny-llama"
    hf.model.save_pretrained(model_folder)
    hf.tokenizer.save_pretrained(model_folder)
    folders = _write(tmp_path, [_topk_sae("blocks.1.hook_resid_post", 7)])
    out = tmp_path / "cli.sqlite3"
    args = [str(model_folder), *map(str, _corpus(tmp_path)), "--out", str(out)]
    args += ["--work", str(tmp_path / "w"), "--name", "tiny", "--seq-len", "16"]
    args += ["--top-kurtosis", "3", "--random", "2", "--dictionary", str(folders[0])]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["latents"] == 5
    assert "hook point 0 (model.layers.1): 48 latents, " in captured.err
    assert " dead (" in captured.err and "FVU" in captured.err
    dataset = registry.read_bundled(out)
    assert dataset.dictionary is not None and dataset.units == "latents"
    assert Path(dataset.dictionary.weights[0]) == Path(
        "dictionaries/tiny-topk/blocks.1.hook_resid_post"
    )
    build = Store.open_read_only(out)
    try:
        picked = build.get_json("meta", "build")["neurons"]
        dead = set(build.get_json("meta", "build")["latents"]["layers"]["0"]["dead_units"])
    finally:
        build.close()
    random = [n["neuron"] for n in picked if n["reason"] == "random"]
    assert len(random) == 2 and not set(random) & dead and not set(random) & set(DEAD)
    assert all(math.isfinite(n["selection_kurtosis"]) for n in picked if n["reason"] == "random")
    bad = tmp_path / "bad"
    bad.mkdir()
    assert main([*args[:-1], str(bad)]) == 2
    assert "not a dictionary folder" in capsys.readouterr().err


def test_an_interrupted_latent_build_resumes_to_the_same_report(tmp_path: Path) -> None:
    from neuron_desk.builder import BuildOptions, DatasetInfo, build_dataset
    from neuron_desk.builder.latents import dictionary_from_folders, load_dictionary_model

    hf = _tiny("llama")
    folders = _write(tmp_path, [_topk_sae("blocks.1.hook_resid_post", 8)])
    _, whole = _build_latents(hf, tmp_path, folders, neurons=(1, 2))
    model = load_dictionary_model(hf, dictionary_from_folders(hf, folders), tmp_path)
    options = BuildOptions(seq_len=16, max_sequences=30, batch_size=7, seed=5, neurons=(1, 2))
    info = DatasetInfo(name="tiny", title="Tiny SAE", model=hf.name, tokenizer="none")

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "activations" and 14 <= done < total:
            raise KeyboardInterrupt

    out, work = tmp_path / "resumed.sqlite3", tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_dataset(model, _corpus(tmp_path), out, work, info, options, interrupt)
    resumed = build_dataset(model, _corpus(tmp_path), out, work, info, options)
    assert resumed.latents == whole.latents
    assert resumed.latents["layers"]["0"]["tokens"] == 480


def test_a_bundled_latent_dataset_is_not_the_default(tmp_path: Path) -> None:
    def bundled(name: str, dictionary: Dictionary | None) -> Path:
        spec = registry.Dataset(
            name=name,
            title=name,
            model="m",
            n_layers=1,
            n_neurons=D_SAE,
            kinds=(Kind.ACTIVATIONS,),
            tokenizer="t",
            dictionary=dictionary,
        ).to_spec()
        path = tmp_path / f"{name}.sqlite3"
        store = Store.open(path)
        store.put_json("meta", "dataset", spec)
        store.close()
        return path

    sae = Dictionary("sae", "topk", D_MODEL, D_SAE, ("model.layers.1",), k=K)
    files = sorted(
        [bundled("smollm2-135m-instruct-sae", sae), bundled("smollm2-135m-instruct", None)]
    )
    assert files[0].name == "smollm2-135m-instruct-sae.sqlite3"  # sorts first by name
    chosen = registry.Registry(bundled=files).default()
    assert chosen.name == "smollm2-135m-instruct" and chosen.unit == "neuron"
    assert registry.Registry(bundled=files[:1]).default().name == "gpt2-xl"  # neurons first


def test_the_kurtosis_ranking_can_skip_the_first_token(tmp_path: Path) -> None:
    hf = _tiny("llama")
    sae = _topk_sae("blocks.1.hook_resid_post", 9)
    options = {"top_kurtosis": 4, "random_neurons": 0, "selection_sequences": 30}
    _, result = _build_latents(
        hf, tmp_path, _write(tmp_path, [sae]), selection_skip_positions=1, **options
    )
    store = Store.open_read_only(result.path)
    sequences = np.array(store.get_json("meta", "sequences"))
    store.close()
    latents = _reference_topk(sae, _hidden(hf, sequences)["blocks.1.hook_resid_post"])

    def kurtosis(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(-1, D_SAE)
        std = flat.std(0)
        z = (flat - flat.mean(0)) / np.where(std > 0, std, 1)
        return np.where(std > 0, np.mean(z**4, axis=0) - 3, -np.inf)

    without_first = kurtosis(latents[:, 1:])
    assert [n.neuron for n in result.neurons] == list(np.argsort(-without_first, kind="stable")[:4])
    for n in result.neurons:
        assert n.selection_kurtosis == pytest.approx(without_first[n.neuron], rel=1e-3)
        assert n.selection_kurtosis != pytest.approx(kurtosis(latents)[n.neuron], rel=1e-3)


# --- the bundled latent sample ---

BUNDLED_SAE = (
    Path(__file__).resolve().parents[2] / "resources/datasets/smollm2-135m-instruct-sae.sqlite3"
)
needs_sae_bundle = pytest.mark.skipif(not BUNDLED_SAE.exists(), reason="no bundled latent sample")


@needs_sae_bundle
def test_bundled_latent_sample_is_small_and_names_its_weights() -> None:
    pytest.importorskip("safetensors")  # the build extra's (through transformers)
    from neuron_desk.builder.dictionaries import read_dictionary

    assert BUNDLED_SAE.stat().st_size <= 25 * 1024 * 1024
    dataset = registry.read_bundled(BUNDLED_SAE)
    assert dataset.name == "smollm2-135m-sae" and dataset.unit == "latent"
    assert dataset.tokenizer == "HuggingFaceTB/SmolLM2-135M-Instruct"
    dictionary = dataset.dictionary
    assert dictionary is not None and dictionary.architecture == "topk"
    assert (dataset.n_layers, dataset.n_neurons) == (len(dictionary.hook_points), dictionary.d_sae)
    assert set(dataset.kinds) == {
        Kind.ACTIVATIONS,
        Kind.RELATED_NEURONS,
        Kind.TOKENS_BY_ACTIVATION,
        Kind.TOKENS_BY_WEIGHT,
    }
    for weights, hook in zip(dictionary.weights, dictionary.hook_points, strict=True):
        assert weights.startswith("../dictionaries/smollm2-135m-instruct-topk/")
        folder = BUNDLED_SAE.parent / weights
        assert (folder / "sae_weights.safetensors").stat().st_size <= 30 * 1024 * 1024
        sae = read_dictionary(folder)
        assert (sae.d_in, sae.d_sae, sae.k) == (576, dictionary.d_sae, dictionary.k)
        assert hook == "model.layers.9" or hook.startswith("model.layers.")
    store = Store.open_read_only(BUNDLED_SAE)
    try:
        build = store.get_json("meta", "build")
        refs = store.stored_neurons(dataset.name, Kind.ACTIVATIONS.value)
        report = build["latents"]["layers"]
        for layer in range(dataset.n_layers):
            assert sum(1 for r in refs if r.layer == layer) >= 200
            assert report[str(layer)]["dead"] == len(report[str(layer)]["dead_units"])
            assert not {r.index for r in refs if r.layer == layer} & set(
                report[str(layer)]["dead_units"]
            )
        for n in dataset.interesting:
            assert NeuronRef(dataset.name, n.layer, n.neuron) in refs
        for ref in refs[:: max(1, len(refs) // 10)]:
            for kind in dataset.kinds:
                stored = store.get_file(ref, kind.value)
                assert stored is not None and stored.origin == "builder"
                codec.loads(stored.text, kind.model_class)
    finally:
        store.close()


@needs_sae_bundle
def test_bundled_latents_match_a_fresh_encode_of_the_real_model() -> None:
    from neuron_desk.builder import load_model
    from neuron_desk.builder.latents import load_dictionary_model
    from neuron_desk.builder.records import decimals_for
    from tests.builder.test_builder import _smollm2

    dataset = registry.read_bundled(BUNDLED_SAE)
    assert dataset.dictionary is not None
    hf = load_model(_smollm2(), threads=2)
    model = load_dictionary_model(hf, dataset.dictionary, BUNDLED_SAE.parent)
    store = Store.open_read_only(BUNDLED_SAE)
    try:
        sequences = np.array(store.get_json("meta", "sequences"), dtype=np.int32)
        digits = store.get_json("meta", "build")["options"]["records"]["significant_digits"]
        vocab = hf.vocab()
        index = {tuple(vocab[t] for t in row): i for i, row in enumerate(sequences)}
        for n in dataset.interesting[:3]:
            stored = store.get_file(NeuronRef(dataset.name, n.layer, n.neuron), "activations")
            assert stored is not None
            record = codec.loads(stored.text, NeuronRecord)
            top = record.most_positive_activation_records[:2]
            ids = [index[tuple(r.tokens)] for r in top]
            fresh = model.activations(
                sequences[ids], [n.layer], {n.layer: np.array([n.neuron], dtype=np.int64)}
            )[n.layer][:, :, 0]
            decimals = decimals_for(record.max_activation, digits)
            step = 0.0 if decimals is None else 10.0**-decimals
            tolerance = 0.5 * step + 1e-3 * record.max_activation
            for row, r in zip(fresh, top, strict=True):
                stored_row = np.array(r.activations)
                peak = int(np.argmax(stored_row))
                assert abs(row[peak] - stored_row[peak]) <= tolerance, n
                # elsewhere a latent at the k-th place may swap with another (float noise)
                assert np.mean(np.abs(row - stored_row) > tolerance) <= 0.05, n
    finally:
        store.close()


def test_interesting_latents_skip_the_rarely_active() -> None:
    from neuron_desk.builder import DatasetInfo, SelectedNeuron
    from neuron_desk.builder.build import interesting_neurons

    selected = [SelectedNeuron(0, i, "kurtosis", rank) for rank, i in enumerate((7, 3, 9, 4), 1)]
    selected += [SelectedNeuron(0, i, "random", rank) for rank, i in enumerate((11, 12), 1)]
    active = {(0, 7): 2, (0, 3): 30, (0, 9): 25, (0, 4): 50, (0, 11): 1, (0, 12): 40}
    info = DatasetInfo("t", "t", "m", "t", interesting_top=2, interesting_min_active=20)
    picks = interesting_neurons(selected, {}, info, active)
    assert [(n.neuron, n.label) for n in picks] == [
        (3, "high kurtosis #2"),
        (9, "high kurtosis #3"),
        (12, "random"),
    ]
    every = DatasetInfo("t", "t", "m", "t", interesting_top=2, interesting_random_every=1)
    assert [n.neuron for n in interesting_neurons(selected, {}, every, active)] == [7, 3, 11]
