"""`neuron-desk batch`: explain and score many neurons, resumable, with a progress bar.

Online by default. Staged (for `vllm run-batch` and the providers' batch APIs):
`--export-requests DIR` finishes the neurons whose responses are all cached and writes the
next stage's requests as OpenAI Batch API JSONL with a manifest; `--import-results FILE...`
reads the engine's output into the response cache (both in one command: import, then export).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neuron_desk.cli.context import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    Context,
    parse_range,
    positive_float,
    positive_int,
)
from neuron_desk.cli.llm import METHOD_CHOICES, endpoint_arguments, run_options
from neuron_desk.cli.output import dumps_json
from neuron_desk.cli.progress import ProgressLine
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.text import for_terminal
from neuron_desk.runs.batch import BatchSpec
from neuron_desk.runs.run import NeuronRun
from neuron_desk.runs.staged import FileLimits


def register(subparsers: Any) -> None:
    """Add the batch command."""
    p = subparsers.add_parser(
        "batch",
        help="explain and score many neurons (rerun the same command to resume)",
        description="Explain and score the neurons of some layers. Results are stored as they "
        "are made; rerunning the same command resumes without repeating finished neurons.",
    )
    p.add_argument("dataset")
    p.add_argument("--layers", required=True, type=parse_range, help="a layer or a range, e.g. 0-3")
    p.add_argument(
        "--neurons",
        type=_neurons,
        help="neurons per layer: a range (0-99) or a list (1,5,9); default: those stored or "
        "bundled",
    )
    p.add_argument("--limit", type=int, help="at most this many neurons, in order")
    endpoint_arguments(p)
    p.add_argument("--model", help="model for explaining and simulating (default: the profile's)")
    p.add_argument("--method", choices=METHOD_CHOICES, help="simulator (default: the profile's)")
    p.add_argument("--samples", type=positive_int, default=1, help="explanations per neuron (1)")
    p.add_argument("--concurrency", type=positive_int, default=4, help="neurons at a time (4)")
    p.add_argument("--budget-tokens", type=positive_int, help="stop when this many tokens are used")
    p.add_argument("--budget-usd", type=positive_float, help="stop when this much money is spent")
    p.add_argument("--name", default="", help="name the batch (default: from its spec)")
    p.add_argument(
        "--compatible",
        action="store_true",
        help="score the original neuron-explainer's way where it differs (see the README)",
    )
    p.add_argument(
        "--scorers",
        nargs="+",
        choices=["detection", "fuzzing"],
        default=[],
        help="second-opinion scorers to run on each neuron's best explanation",
    )
    staged = p.add_argument_group(
        "staged batches", "hand the requests to an engine that batches (see README: Staged jobs)"
    )
    staged.add_argument(
        "--export-requests",
        metavar="DIR",
        type=Path,
        help="finish what is cached and write the next stage's requests (OpenAI Batch JSONL)",
    )
    staged.add_argument(
        "--import-results",
        metavar="FILE",
        nargs="+",
        type=Path,
        help="read OpenAI Batch or vLLM run-batch output files into the response cache",
    )
    staged.add_argument(
        "--max-requests-per-file",
        type=positive_int,
        default=FileLimits.max_requests,
        help=f"split request files at this many lines ({FileLimits.max_requests:,}, OpenAI's)",
    )
    staged.add_argument(
        "--max-bytes-per-file",
        type=positive_int,
        default=FileLimits.max_bytes,
        help=f"split request files at this size ({FileLimits.max_bytes:,} bytes, OpenAI's)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_batch)


def _neurons(text: str) -> list[int]:
    if "," in text:
        try:
            return sorted({int(part) for part in text.split(",") if part.strip()})
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of neurons: {text!r}") from None
    start, end = parse_range(text)
    return list(range(start, end + 1))


def cmd_batch(args: argparse.Namespace, context: Context) -> int:
    """Run (or resume) a batch and print its summary."""
    desk = context.desk
    dataset = desk.dataset(args.dataset)
    first, last = args.layers
    for layer in (first, last):
        dataset.check(layer, 0)
    if args.neurons is not None:
        for n in args.neurons:
            dataset.check(first, n)
        neurons = [
            NeuronRef(dataset.name, layer, n)
            for layer in range(first, last + 1)
            for n in args.neurons
        ]
    else:
        neurons = [r for r in desk.available_neurons(dataset.name) if first <= r.layer <= last]
        if not neurons:
            raise ValueError(
                f"no {dataset.units} of {dataset.name} layers {first}-{last} are stored or "
                "bundled: "
                "name them with --neurons"
            )
    if args.limit is not None:
        neurons = neurons[: args.limit]

    profile = desk.profile(args.profile, args.base_url)
    options = run_options(args, profile, explain=True)
    spec = BatchSpec(
        dataset.name, tuple(neurons), profile.name, args.samples, args.name, tuple(args.scorers)
    )
    if args.export_requests is not None or args.import_results:
        staged = desk.staged_run(profile, options, run_id=spec.batch_id)
        return _staged(args, context, spec, staged)
    run = desk.run(profile, options, run_id=spec.batch_id)
    line = ProgressLine.for_args(dataset.units, args.json)
    summary = context.run(
        lambda desk: desk.batch(
            spec,
            run,
            concurrency=args.concurrency,
            progress=lambda s: line.update(
                s.done, s.total, tokens=run.usage.total_tokens, extra=f"failed {s.failed}"
            ),
        )
    )
    line.finish()
    if args.json:
        print(dumps_json(summary.to_json(), indent=1))
    else:
        print(summary.describe(dataset.units))
        for error in summary.errors[:20]:
            print(f"  {for_terminal(error, keep_newlines=False)}", file=sys.stderr)
        if len(summary.errors) > 20:
            print(f"  … and {len(summary.errors) - 20} more (--json lists all)", file=sys.stderr)
        if summary.errors:
            print(
                f"  rerun the same command to retry only the {dataset.units} not done",
                file=sys.stderr,
            )
    return EXIT_OK if summary.failed == 0 and not summary.stopped else EXIT_NOT_FOUND


def _staged(args: argparse.Namespace, context: Context, spec: BatchSpec, run: NeuronRun) -> int:
    """Import results (if given), then export the next stage (if asked); print both."""
    desk = context.desk
    out: dict[str, Any] = {"batch_id": spec.batch_id}
    failed = 0
    if args.import_results:
        profile = desk.profile(args.profile, args.base_url)
        imported = desk.import_results(args.import_results, profile, run_id=spec.batch_id)
        out["import"] = imported.to_json()
        if not args.json:
            print(imported.describe())
            for error in imported.errors[:10]:
                print(f"  {for_terminal(error, keep_newlines=False)}", file=sys.stderr)
    if args.export_requests is not None:
        limits = FileLimits(args.max_requests_per_file, args.max_bytes_per_file)
        report, _summary = context.run(
            lambda desk: desk.export_requests(
                spec,
                run,
                args.export_requests,
                limits=limits,
                concurrency=args.concurrency,
            )
        )
        out["export"] = report.to_json()
        failed = report.failed
        if not args.json:
            print(report.describe(desk.dataset(spec.dataset).units))
            for error in report.errors[:10]:
                print(f"  {for_terminal(error, keep_newlines=False)}", file=sys.stderr)
    if args.json:
        print(dumps_json(out, indent=1))
    return EXIT_OK if failed == 0 else EXIT_NOT_FOUND

