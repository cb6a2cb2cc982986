"""Command line: build a dataset store for a Hugging Face causal LM over text files: its MLP
neurons, or with `--dictionary` the latents of SAEs or transcoders at their hook points."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuron_desk.builder.build import (
    BuildError,
    BuildOptions,
    DatasetInfo,
    NeuronModel,
    build_dataset,
    describe_latents,
    print_progress,
)
from neuron_desk.builder.records import RecordOptions
from neuron_desk.core.errors import NeuronDeskError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m neuron_desk.builder",
        description="Build neuron records, top tokens and related neurons for a causal LM.",
    )
    parser.add_argument("model", type=Path, help="a Hugging Face model folder or a .gguf file")
    parser.add_argument("corpus", type=Path, nargs="+", help="UTF-8 text files")
    parser.add_argument("--out", type=Path, required=True, help="the dataset file to write")
    parser.add_argument("--work", type=Path, required=True, help="state folder (for resuming)")
    parser.add_argument("--name", required=True, help="dataset name, e.g. my-model")
    parser.add_argument("--title", help="dataset title (default: the name)")
    parser.add_argument("--model-name", help="the model's Hugging Face name (for the tokenizer)")
    parser.add_argument("--licence", default="", help="licences of the model and the corpus")
    parser.add_argument("--description", default="")
    parser.add_argument("--sequences", type=int, help="at most this many sequences (sampled)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, nargs="+", help="only these layers")
    parser.add_argument("--neurons", type=int, nargs="+", help="only these neurons per layer")
    parser.add_argument("--top-kurtosis", type=int, default=0, help="per layer, by kurtosis")
    parser.add_argument("--random", type=int, default=0, help="per layer, at random")
    parser.add_argument("--selection-sequences", type=int, default=256)
    parser.add_argument(
        "--selection-skip-positions",
        type=int,
        default=0,
        help="rank by kurtosis without the first N tokens of each sequence (attention sinks)",
    )
    parser.add_argument("--digits", type=int, help="round activations (significant digits)")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument(
        "--dictionary",
        type=Path,
        nargs="+",
        metavar="FOLDER",
        help="build latents instead of neurons: SAELens, sparsify or Gemma Scope folders, one "
        "per hook point (layer i of the dataset is the i-th folder)",
    )
    parser.add_argument(
        "--hook-points",
        nargs="+",
        metavar="HOOK",
        help="hook points of the --dictionary folders, when their files name none (or another)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run a build; 0 on success."""
    args = parse_args(argv)
    from neuron_desk.builder.hf import library_versions, load_model

    hf = load_model(args.model, name=args.model_name, threads=args.threads)
    model: NeuronModel = hf
    if args.dictionary:
        from neuron_desk.builder.latents import dictionary_from_folders, load_dictionary_model

        try:
            dictionary = dictionary_from_folders(hf, args.dictionary, args.hook_points)
            model = load_dictionary_model(hf, dictionary, Path.cwd())
        except (NeuronDeskError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    options = BuildOptions(
        seq_len=args.seq_len,
        max_sequences=args.sequences,
        batch_size=args.batch_size,
        seed=args.seed,
        layers=tuple(args.layers) if args.layers else None,
        neurons=tuple(args.neurons) if args.neurons else None,
        top_kurtosis=args.top_kurtosis,
        random_neurons=args.random,
        selection_sequences=args.selection_sequences,
        selection_skip_positions=args.selection_skip_positions,
        records=RecordOptions(significant_digits=args.digits),
    )
    name = args.model_name or args.model.name
    info = DatasetInfo(
        name=args.name,
        title=args.title or args.name,
        model=name,
        tokenizer=name,
        licence=args.licence,
        description=args.description,
    )
    try:
        result = build_dataset(
            model,
            args.corpus,
            args.out,
            args.work,
            info,
            options,
            print_progress(),
            extra_meta={"versions": library_versions()},
        )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    summary = {
        "out": str(result.path),
        result.dataset.units: len(result.neurons),
        "sequences": result.n_sequences,
        "seconds": round(result.seconds, 1),
    }
    if result.latents is not None:
        print(describe_latents(result.latents), file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
