"""Train the bundled dictionary: a TopK sparse autoencoder on SmolLM2-135M-Instruct's residual stream.

The exact command (from the repository root, with the `[build]` extra and eai-sparsify installed,
see docs/notes/train.md):

    SPARSIFY_DISABLE_TRITON=1 python packaging/train_dictionary.py

Phases, each kept in build/dictionary-train/ so an interrupted run resumes where it stopped
(delete that folder to start over):

1. tokenize: every 64-token window of the bundled sample's offline corpus (the builder's
   `windows`, no special tokens), in a seeded random order;
2. cache: the residual stream after decoder layer 9 (HF module `model.layers.9`) for the first
   `--sequences` windows, float16 on disk (the forward stops after layer 9);
3. train: EleutherAI sparsify's own `Trainer` (eai-sparsify 1.3.3) on those activations. Its
   trainer runs a model and hooks a module; here the "model" is `CachedActivations`, whose token
   ids are row numbers of the cache and whose module `layers.9` returns the cached row, so
   sparsify's loop (bias init, unit-norm decoder, TopK, AuxK, optimizer, dead-latent counts,
   checkpoints) runs unchanged without a forward pass per step;
4. export: sparsify's `cfg.json` + `sae.safetensors` converted to SAELens format (`cfg.json` +
   `sae_weights.safetensors`, architecture "topk") in resources/dictionaries/, checked to give
   sparsify's encoder output, and a report (fraction of variance explained on held-out
   windows, dead and dense latents) written next to the weights.

Every 20th window (in the shuffled order) is held out of training.

Measured (2 CPU cores shared with five other jobs; report.json has every figure): 5,152 windows
(329,728 tokens) cached in 1,386 s; 518 steps of 4,096 tokens (6.8 epochs over 313,280
training tokens) in the 34-minute budget; held-out fraction of variance explained 0.875
(0.873 on 64 held-out windows recomputed in float32); 191 of 4,608 latents dead (never fire
on the 329,728 tokens), 24 dense (> 10 % of tokens); SAELens file vs sparsify's encoder: max
abs diff 1.5e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging"))

from build_sample import HF_NAME, describe_corpus, find_gguf, prepare_corpus

from neuron_desk.builder import library_versions, load_model
from neuron_desk.builder.corpus import windows

WORK = ROOT / "build/dictionary-train"
OUT = ROOT / "resources/dictionaries/smollm2-135m-instruct-topk"
SEQ_LEN = 64
LAYER = 9
HOOK_MODULE = f"model.layers.{LAYER}"  # the Hugging Face module (its output)
SPARSIFY_HOOK = f"layers.{LAYER}"  # the same module seen from sparsify (model.base_model)
SAELENS_HOOK = f"blocks.{LAYER}.hook_resid_post"
D_IN = 576
HELD_OUT_EVERY = 20
SEED = 0


def log(message: str) -> None:
    """Print a timestamped progress line."""
    print(time.strftime("%H:%M:%S"), message, flush=True)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- 1. tokenize ---------------------------------------------------------------------------


def tokenize(work: Path, model: Any) -> np.ndarray:
    """All corpus windows of SEQ_LEN tokens, shuffled with a fixed seed: (n_windows, SEQ_LEN)."""
    path = work / "windows.npy"
    if not path.exists():
        files = prepare_corpus(work / "corpus")
        write_json(work / "corpus.json", describe_corpus(files))
        log(f"tokenize {len(files)} files")
        ids = np.array(list(windows(files, model.encode, SEQ_LEN)), dtype=np.int32)
        order = np.random.default_rng(SEED).permutation(len(ids))
        np.save(path, ids[order])
    ids = np.load(path)
    log(f"{len(ids)} windows of {SEQ_LEN} tokens")
    return ids


# --- 2. cache ------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the hook to end the forward pass after the hooked layer."""


def residual_stream(model: Any, ids: np.ndarray) -> np.ndarray:
    """The output of `model.layers.LAYER` for a batch (batch, seq) as float32 (batch, seq, d)."""
    import torch

    captured: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    module = model.model.get_submodule(HOOK_MODULE)
    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model.model(input_ids=torch.as_tensor(ids, dtype=torch.long), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0].float().numpy()


def cache(work: Path, model: Any, ids: np.ndarray, batch: int, minutes: float) -> int:
    """Cache activations of the first len(ids) windows; returns how many are cached.

    Stops early (resumable) after `minutes` of forward passes.
    """
    n = len(ids)
    path, state_path = work / "acts.f16", work / "acts.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"n": n, "done": 0}
    if state["n"] != n:
        raise SystemExit(f"{work} caches {state['n']} windows, not {n}: use --work elsewhere")
    acts = np.memmap(
        path, dtype=np.float16, mode="r+" if path.exists() else "w+", shape=(n, SEQ_LEN, D_IN)
    )
    started = time.monotonic()
    done0 = state["done"]
    while state["done"] < n and time.monotonic() - started < minutes * 60:
        tick = time.monotonic()
        start = state["done"]
        stop = min(n, start + batch)
        values = residual_stream(model, ids[start:stop])
        if not np.isfinite(values).all() or np.abs(values).max() >= 65504:
            raise SystemExit("activations do not fit float16")
        acts[start:stop] = values.astype(np.float16)
        acts.flush()
        state["done"] = stop
        state["seconds"] = round(state.get("seconds", 0.0) + time.monotonic() - tick, 2)
        write_json(state_path, state)
        if (stop // batch) % 10 == 0 or stop == n:
            rate = (stop - done0) * SEQ_LEN / (time.monotonic() - started)
            log(f"cache {stop}/{n} windows, {rate:.0f} tokens/s")
    return int(state["done"])


# --- 3. train -----------------------------------------------------------------------------


def split(n_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows (window * SEQ_LEN + position) of the training and the held-out windows."""
    window = np.arange(n_windows)
    held = window % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    positions = np.arange(SEQ_LEN)

    def rows(chosen: np.ndarray) -> np.ndarray:
        return (chosen[:, None] * SEQ_LEN + positions[None, :]).reshape(-1)

    return rows(window[~held]), rows(window[held])


def load_cache(work: Path, n_windows: int) -> Any:
    """The first n_windows cached windows as one float16 tensor (n_windows * SEQ_LEN, D_IN)."""
    import torch

    total = json.loads((work / "acts.json").read_text())["n"]
    acts = np.memmap(work / "acts.f16", dtype=np.float16, mode="r", shape=(total, SEQ_LEN, D_IN))
    return torch.from_numpy(np.array(acts[:n_windows]).reshape(-1, D_IN))  # a writable copy


def make_cached_model(table: Any) -> Any:
    """A stand-in for the language model in sparsify's Trainer, over cached activations.

    Its "token ids" are row numbers of `table`; its module `layers.LAYER` (an identity) outputs
    those rows, so sparsify's forward hook on that module sees the cached residual stream.
    """
    import torch
    from torch import nn

    class CachedActivations(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = table
            self.layers = nn.ModuleList(nn.Identity() for _ in range(LAYER + 1))
            self.config = SimpleNamespace(num_hidden_layers=LAYER + 1)

        @property
        def base_model(self) -> nn.Module:
            return self

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        @property
        def dummy_inputs(self) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.zeros(1, SEQ_LEN, dtype=torch.long)}

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.layers[LAYER](self.table[input_ids].float())

    return CachedActivations()


def make_rows_dataset(rows: np.ndarray, deadline: float) -> Any:
    """sparsify's dataset protocol ({"input_ids"} items, `len`, `select` to resume) over rows.

    It stops yielding at `deadline` (time.monotonic()), which ends sparsify's `fit` early with
    a final checkpoint: the time budget.
    """
    import torch

    class TokenRows(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __init__(self, values: np.ndarray) -> None:
            self.values = values

        def __len__(self) -> int:
            return len(self.values)

        def __iter__(self) -> Any:
            for row in self.values:
                if time.monotonic() >= deadline:
                    log("time budget reached: stopping")
                    return
                yield {"input_ids": torch.from_numpy(row)}

        def select(self, indices: range) -> TokenRows:
            return TokenRows(self.values[indices.start : indices.stop])

    return TokenRows(rows)


def epochs_of(train_rows: np.ndarray, epochs: int) -> np.ndarray:
    """`epochs` seeded shuffles of the training rows, cut into sequences (n, SEQ_LEN), int64."""
    usable = len(train_rows) // SEQ_LEN * SEQ_LEN
    parts = [
        np.random.default_rng([SEED, epoch]).permutation(train_rows)[:usable]
        for epoch in range(epochs)
    ]
    return np.concatenate(parts).reshape(-1, SEQ_LEN).astype(np.int64)


def train_config(args: argparse.Namespace) -> Any:
    """sparsify's TrainConfig for this run."""
    from sparsify import SaeConfig, TrainConfig

    return TrainConfig(
        SaeConfig(num_latents=args.latents, k=args.k),
        batch_size=args.batch,  # sequences of SEQ_LEN cached tokens
        loss_fn="fvu",
        optimizer=args.optimizer,
        auxk_alpha=1 / 32,  # the AuxK weight of Gao et al. (2024), as in sparsify's README
        dead_feature_threshold=args.dead_after,
        hookpoints=[SPARSIFY_HOOK],
        init_seeds=[SEED],
        save_every=args.save_every,
        log_to_wandb=False,
        save_dir=str(args.work / "sparsify"),
        run_name=RUN_NAME,
    )


RUN_NAME = "smollm2-135m-instruct"


def train(args: argparse.Namespace, n_windows: int) -> dict[str, Any]:
    """Run sparsify's Trainer over the cached activations (resuming a checkpoint)."""
    import torch
    from sparsify import Trainer

    done_path = args.work / "train.json"
    if done_path.exists():
        return dict(json.loads(done_path.read_text()))
    torch.manual_seed(SEED)
    train_rows, _ = split(n_windows)
    rows = epochs_of(train_rows, args.epochs)
    table = load_cache(args.work, n_windows)
    cfg = train_config(args)
    deadline = time.monotonic() + args.train_minutes * 60
    trainer = Trainer(cfg, make_rows_dataset(rows, deadline), make_cached_model(table))
    checkpoint = args.work / "sparsify" / RUN_NAME
    resumed = (checkpoint / "state.pt").exists()
    if resumed:
        trainer.load_state(str(checkpoint))
    started = time.monotonic()
    log(f"train on {len(train_rows)} tokens x {args.epochs} epochs = {len(rows)} sequences")
    trainer.fit()
    seconds = time.monotonic() - started
    visits = min(trainer.global_step * args.batch, len(rows)) * SEQ_LEN
    result = {
        "windows_cached": n_windows,
        "train_tokens": len(train_rows),
        "epochs_planned": args.epochs,
        "token_visits": visits,
        "epochs_done": round(visits / len(train_rows), 2),
        "steps": int(trainer.global_step),
        "tokens_per_step": args.batch * SEQ_LEN,
        "seconds_last_session": round(seconds, 1),
        "tokens_per_second": round(visits / seconds, 1) if not resumed else None,
        "config": cfg.to_dict(),
    }
    write_json(done_path, result)
    return result


# --- 4. export -----------------------------------------------------------------------------


def saelens_tensors(sae: Any) -> dict[str, Any]:
    """sparsify's tensors in SAELens's names and layout (sparsify's encoder is [d_sae, d_in])."""
    return {
        "W_enc": sae.encoder.weight.detach().T.contiguous().float(),
        "b_enc": sae.encoder.bias.detach().contiguous().float(),
        "W_dec": sae.W_dec.detach().contiguous().float(),
        "b_dec": sae.b_dec.detach().contiguous().float(),
    }


def saelens_cfg(sae: Any, corpus: str) -> dict[str, Any]:
    """A SAELens 6 `cfg.json` for a TopK SAE (the keys `TopKSAEConfig.to_dict()` writes).

    model_name and hook_name are also written at the top level, where SAELens < 6 and other
    readers look for them.
    """
    return {
        "architecture": "topk",
        "d_in": sae.d_in,
        "d_sae": sae.num_latents,
        "k": sae.cfg.k,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "model_name": HF_NAME,
        "hook_name": SAELENS_HOOK,
        "hook_layer": LAYER,
        "metadata": {
            "sae_lens_version": "6.18.0",
            "sae_lens_training_version": None,
            "model_name": HF_NAME,
            "model_class_name": "AutoModelForCausalLM",
            "hook_name": SAELENS_HOOK,
            "hook_head_index": None,
            "context_size": SEQ_LEN,
            "prepend_bos": False,
            "exclude_special_tokens": False,
            "seqpos_slice": [None],
            "model_from_pretrained_kwargs": {},
            "dataset_path": corpus,
            "hf_hook_name": HOOK_MODULE,
            "trained_with": "eai-sparsify 1.3.3 (sparsify.Trainer, cached activations)",
        },
    }


def saelens_encode(tensors: dict[str, Any], k: int, x: Any) -> Any:
    """SAELens's TopK encoder (TopKSAE.encode): top k of (x - b_dec) W_enc + b_enc, then ReLU."""
    import torch

    pre = (x - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, values.relu())


def sparsify_dense(sae: Any, x: Any) -> Any:
    """sparsify's encoder output as a dense (tokens, d_sae) tensor."""
    import torch

    out = sae.encode(x)
    dense = torch.zeros(x.shape[0], sae.num_latents)
    return dense.scatter_(-1, out.top_indices, out.top_acts)


def evaluate(sae: Any, table: Any, n_windows: int, chunk: int = 4096) -> dict[str, Any]:
    """FVE on the held-out tokens; firing counts over every cached token."""
    import torch

    train_rows, held_rows = split(n_windows)
    fires = torch.zeros(sae.num_latents, dtype=torch.long)
    held_fires = torch.zeros(sae.num_latents, dtype=torch.long)
    sums = {"sq_err": 0.0, "sq_err_no_first": 0.0}
    held = table[torch.from_numpy(held_rows)].float()
    first = torch.from_numpy(held_rows % SEQ_LEN == 0)
    with torch.no_grad():
        for start in range(0, len(held), chunk):
            x = held[start : start + chunk]
            out = sae.encode(x)
            x_hat = sae.decode(out.top_acts, out.top_indices)
            err = (x - x_hat).pow(2).sum(-1)
            sums["sq_err"] += float(err.sum())
            sums["sq_err_no_first"] += float(err[~first[start : start + chunk]].sum())
            held_fires += torch.bincount(
                out.top_indices[out.top_acts > 0], minlength=sae.num_latents
            )
        for start in range(0, len(train_rows), chunk):
            x = table[torch.from_numpy(train_rows[start : start + chunk])].float()
            out = sae.encode(x)
            fires += torch.bincount(out.top_indices[out.top_acts > 0], minlength=sae.num_latents)
        total_var = float((held - held.mean(0)).pow(2).sum())
        rest = held[~first]
        rest_var = float((rest - rest.mean(0)).pow(2).sum())
    all_fires = fires + held_fires
    n_tokens = len(train_rows) + len(held_rows)
    frequency = all_fires.double() / n_tokens
    return {
        "held_out_windows": int(len(held_rows) // SEQ_LEN),
        "held_out_tokens": len(held_rows),
        "eval_tokens": int(n_tokens),
        "fraction_of_variance_explained": round(1 - sums["sq_err"] / total_var, 4),
        "fraction_of_variance_explained_without_position_0": round(
            1 - sums["sq_err_no_first"] / rest_var, 4
        ),
        "l0": sae.cfg.k,
        "dead_latents": int((all_fires == 0).sum()),
        "dead_latents_on_held_out": int((held_fires == 0).sum()),
        "dense_latents": int((frequency > 0.1).sum()),
        "dense_threshold": 0.1,
        "firing_frequency_median": float(frequency.median()),
        "firing_frequency_max": round(float(frequency.max()), 4),
    }


def float32_check(sae: Any, model: Any, ids: np.ndarray, table: Any, count: int) -> dict[str, Any]:
    """The first `count` held-out windows run again in float32: FVE and the float16 rounding."""
    import torch

    chosen = np.arange(HELD_OUT_EVERY - 1, len(ids), HELD_OUT_EVERY)[:count]
    fresh = torch.from_numpy(
        np.concatenate([residual_stream(model, ids[group]) for group in chosen.reshape(-1, 8)])
    ).reshape(-1, D_IN)
    rows = (chosen[:, None] * SEQ_LEN + np.arange(SEQ_LEN)[None, :]).reshape(-1)
    cached = table[torch.from_numpy(rows)].float()
    with torch.no_grad():
        out = sae.encode(fresh)
        err = (fresh - sae.decode(out.top_acts, out.top_indices)).pow(2).sum()
    return {
        "float32_windows": len(chosen),
        "float32_fraction_of_variance_explained": round(
            1 - float(err) / float((fresh - fresh.mean(0)).pow(2).sum()), 4
        ),
        "float16_cache_max_relative_error": float(
            ((cached - fresh).abs() / fresh.abs().clamp_min(1e-2)).max()
        ),
    }


def export(
    args: argparse.Namespace, n_windows: int, training: dict[str, Any], model: Any, ids: Any
) -> dict[str, Any]:
    """Convert sparsify's checkpoint to SAELens format, check it, evaluate it, write the report."""
    import torch
    from safetensors.torch import load_file, save_file
    from sparsify import Sae

    sae = Sae.load_from_disk(args.work / "sparsify" / RUN_NAME / SPARSIFY_HOOK)
    sae.eval()
    folder = args.out / HOOK_MODULE
    folder.mkdir(parents=True, exist_ok=True)
    corpus = "offline: Python 3.11 docs (pydoc_data/topics.py, Debian python3.11-doc) + KJV"
    save_file(saelens_tensors(sae), str(folder / "sae_weights.safetensors"))
    (folder / "sae_weights.safetensors").chmod(0o644)
    write_json(folder / "cfg.json", saelens_cfg(sae, corpus))

    table = load_cache(args.work, n_windows)
    _, held_rows = split(n_windows)
    sample = table[torch.from_numpy(held_rows[:4096])].float()
    saved = load_file(str(folder / "sae_weights.safetensors"))
    with torch.no_grad():
        diff = (saelens_encode(saved, sae.cfg.k, sample) - sparsify_dense(sae, sample)).abs().max()
    if float(diff) > 1e-4:
        raise SystemExit(f"SAELens weights differ from sparsify's encoder by {float(diff)}")
    log(f"SAELens encoder matches sparsify's: max abs diff {float(diff):.2e} on 4096 tokens")
    config = training.get("config", {})
    if "save_dir" in config:  # where the checkpoints were, relative to the repository
        config["save_dir"] = os.path.relpath(config["save_dir"], ROOT)
    metrics = evaluate(sae, table, n_windows)
    metrics.update(float32_check(sae, model, ids, table, 64))
    cache_state = json.loads((args.work / "acts.json").read_text())
    report = {
        "dictionary": "smollm2-135m-instruct-topk",
        "model": HF_NAME,
        "model_file": find_gguf().name,
        "hook": {"hf_module": HOOK_MODULE, "sparsify": SPARSIFY_HOOK, "saelens": SAELENS_HOOK},
        "d_in": sae.d_in,
        "d_sae": sae.num_latents,
        "k": sae.cfg.k,
        **metrics,
        "encoder_check_max_abs_diff": float(diff),
        "corpus": json.loads((args.work / "corpus.json").read_text()),
        "windows_in_corpus": int(np.load(args.work / "windows.npy", mmap_mode="r").shape[0]),
        "windows_cached": n_windows,
        "seq_len": SEQ_LEN,
        "cache_seconds": cache_state.get("seconds"),
        "training": training,
        "trainer": "eai-sparsify 1.3.3 sparsify.Trainer over cached float16 activations",
        "python": platform.python_version(),
        "versions": {**library_versions(), "eai-sparsify": _version("eai-sparsify")},
        "command": "SPARSIFY_DISABLE_TRITON=1 python packaging/train_dictionary.py",
    }
    write_json(folder / "report.json", report)
    return report


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--sequences", type=int, default=24576, help="windows to cache")
    parser.add_argument(
        "--cache-minutes", type=float, default=60.0, help="stop caching after this (resumable)"
    )
    parser.add_argument("--train-windows", type=int, default=None, help="train on this many")
    parser.add_argument("--latents", type=int, default=4608)
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="sequences of 64 tokens per step")
    parser.add_argument("--epochs", type=int, default=8, help="passes over the training tokens")
    parser.add_argument(
        "--train-minutes", type=float, default=35.0, help="time budget of this training session"
    )
    parser.add_argument("--optimizer", default="signum", choices=["signum", "adam"])
    parser.add_argument("--dead-after", type=int, default=1_000_000, help="tokens, for AuxK")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--only-cache", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = load_model(find_gguf(), name=HF_NAME, threads=args.threads)
    ids = tokenize(args.work, model)[: args.sequences]
    cached = args.train_windows or cache(args.work, model, ids, 32, args.cache_minutes)
    if args.only_cache:
        return
    training = train(args, cached)
    report = export(args, cached, training, model, ids)
    print(
        json.dumps({k: v for k, v in report.items() if k not in ("corpus", "training")}, indent=1)
    )


if __name__ == "__main__":
    main()
