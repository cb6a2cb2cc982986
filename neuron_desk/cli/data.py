"""Data commands: datasets, show, fetch, import, neurons, search, cache, export."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from neuron_desk.cli.context import EXIT_NOT_FOUND, EXIT_OK, Context, parse_range
from neuron_desk.core import codec
from neuron_desk.core.errors import NotAvailableOffline, NotFound
from neuron_desk.data.exports import export_neuron
from neuron_desk.data.importer import import_paths
from neuron_desk.data.registry import Kind
from neuron_desk.data.service import Fetched, NeuronService, PrefetchProgress, describe

T = TypeVar("T")


def register(subparsers: Any) -> None:
    """Add the data commands."""
    p = subparsers.add_parser("datasets", help="list the datasets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_datasets)

    p = subparsers.add_parser("show", help="show what is known about a neuron")
    _neuron_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--offline", action="store_true", help="use only the store and bundled data")
    p.set_defaults(run=cmd_show)

    p = subparsers.add_parser("fetch", help="fetch and store a neuron or a range of neurons")
    p.add_argument("dataset")
    p.add_argument("layer", type=int)
    p.add_argument("neurons", type=parse_range, help="a neuron or a range such as 0-99")
    p.add_argument("--kinds", nargs="+", choices=[k.value for k in Kind], help="default: all")
    p.add_argument("--concurrency", type=int, default=8)
    p.set_defaults(run=cmd_fetch)

    p = subparsers.add_parser("import", help="import files in the public layout, or single files")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--dataset", default="gpt2-xl", help="dataset to file them under (gpt2-xl)")
    p.set_defaults(run=cmd_import)

    p = subparsers.add_parser("neurons", help="list the neurons of a dataset")
    p.add_argument("dataset")
    p.add_argument("--layer", type=int)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--offline", action="store_true", help="only those stored or bundled")
    p.set_defaults(run=cmd_neurons)

    p = subparsers.add_parser("search", help="search published and generated explanations")
    p.add_argument("text")
    p.add_argument("--dataset")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_search)

    p = subparsers.add_parser("cache", help="show or clear the stored files")
    p.add_argument("action", nargs="?", choices=["stats", "clear"], default="stats")
    p.add_argument("--dataset")
    p.set_defaults(run=cmd_cache)

    p = subparsers.add_parser("export", help="export a neuron's explanations and scores")
    _neuron_arguments(p)
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(run=cmd_export)


def _neuron_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset")
    p.add_argument("layer", type=int)
    p.add_argument("neuron", type=int)


def with_service(
    context: Context, offline: bool, work: Callable[[NeuronService], Coroutine[Any, Any, T]]
) -> T:
    """Run `work` with a neuron service in an event loop, closing it afterwards."""

    async def run() -> T:
        service = NeuronService(context.registry, context.store, offline=offline)
        try:
            return await work(service)
        finally:
            await service.aclose()

    return asyncio.run(run())


def cmd_datasets(args: argparse.Namespace, context: Context) -> int:
    """List datasets."""
    datasets = context.registry.all()
    if args.json:
        print(json.dumps([{**d.to_spec(), "origin": d.origin} for d in datasets], indent=1))
        return EXIT_OK
    for d in datasets:
        print(f"{d.name:16} {d.n_layers:3} x {d.n_neurons:<6} {d.origin:8} {d.title}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, context: Context) -> int:
    """Show one neuron."""
    data = with_service(
        context, args.offline, lambda s: s.neuron(args.dataset, args.layer, args.neuron)
    )
    stored = context.store.explanations(data.dataset.name, args.layer, args.neuron)
    summary = describe(data, stored)
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        _print_summary(summary)
    if isinstance(data.record, NotFound | NotAvailableOffline) and not summary["explanations"]:
        print(f"neuron-desk: {data.record}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"{summary['dataset']} layer {summary['layer']} neuron {summary['neuron']}")
    if "counts" in summary:
        counts = summary["counts"]
        print(
            f"  max activation {summary['max_activation']:.3f}  records: top {counts['top']}, "
            f"quantiles {counts['quantiles']}, random {counts['random']}  ({summary['origin']})"
        )
    for e in summary["explanations"]:
        score = "  n/a" if e["score"] is None else f"{e['score']:.2f}"
        print(f"  [{score}] {e['explanation'].strip()}  ({e['source']})")
    for name, pairs in summary["top_tokens"].items():
        print(f"  {name}: " + ", ".join(repr(t) for t, _ in pairs[:10]))
    for kind, message in summary["errors"].items():
        print(f"  {kind}: {message}")


def cmd_fetch(args: argparse.Namespace, context: Context) -> int:
    """Prefetch a range of neurons with a progress bar."""
    start, end = args.neurons
    kinds = [Kind(k) for k in args.kinds] if args.kinds else None
    report = with_service(
        context,
        False,
        lambda s: s.prefetch(
            args.dataset,
            [(args.layer, n) for n in range(start, end + 1)],
            kinds,
            concurrency=args.concurrency,
            progress=_progress_bar,
        ),
    )
    print(file=sys.stderr)
    print(
        f"fetched {report.fetched}, already stored {report.already}, absent {report.absent}, "
        f"failed {report.failed}"
    )
    for line in report.errors[:20]:
        print(f"  {line}", file=sys.stderr)
    return EXIT_OK if report.failed == 0 else EXIT_NOT_FOUND


def _progress_bar(report: PrefetchProgress) -> None:
    width = 30
    filled = width * report.done // max(report.total, 1)
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {report.done}/{report.total}", end="", file=sys.stderr, flush=True)


def cmd_import(args: argparse.Namespace, context: Context) -> int:
    """Import files into the store, validating each."""
    dataset = context.registry.get(args.dataset)
    result = import_paths(context.store, dataset, args.paths)
    for path, message in result.rejected:
        print(f"rejected {path}: {message}", file=sys.stderr)
    print(f"imported {len(result.imported)} files into {dataset.name}")
    return EXIT_OK if not result.rejected else 2


def cmd_neurons(args: argparse.Namespace, context: Context) -> int:
    """List neurons: all of the dataset's shape, or those stored/bundled with --offline."""
    dataset = context.registry.get(args.dataset)
    if args.layer is not None:
        dataset.check(args.layer, 0)
    if args.offline or dataset.bundled:
        neurons = with_service(context, True, _available(args.dataset, args.layer))
    else:
        layers = [args.layer] if args.layer is not None else range(dataset.n_layers)
        neurons = [(layer, n) for layer in layers for n in range(dataset.n_neurons)]
    if args.json:
        print(json.dumps([{"layer": layer, "neuron": n} for layer, n in neurons]))
    else:
        for layer, n in neurons:
            print(f"{layer} {n}")
    return EXIT_OK


def _available(
    dataset: str, layer: int | None
) -> Callable[[NeuronService], Coroutine[Any, Any, list[tuple[int, int]]]]:
    async def available(service: NeuronService) -> list[tuple[int, int]]:
        return service.available_neurons(dataset, layer)

    return available


def cmd_search(args: argparse.Namespace, context: Context) -> int:
    """Full-text search over explanations."""
    rows = context.store.search(args.text, args.dataset)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "dataset": r.dataset,
                        "layer": r.layer,
                        "neuron": r.neuron,
                        "explanation": r.explanation,
                        "score": r.score,
                        "source": r.source,
                    }
                    for r in rows
                ],
                ensure_ascii=False,
            )
        )
        return EXIT_OK
    for r in rows:
        score = "  n/a" if r.score is None else f"{r.score:.2f}"
        print(f"{r.dataset} {r.layer}:{r.neuron} [{score}] {r.explanation.strip()} ({r.source})")
    return EXIT_OK if rows else EXIT_NOT_FOUND


def cmd_cache(args: argparse.Namespace, context: Context) -> int:
    """Show or clear stored files."""
    if args.dataset:
        context.registry.get(args.dataset)
    if args.action == "clear":
        count = context.store.clear_files(args.dataset)
        print(f"removed {count} stored files" + (f" of {args.dataset}" if args.dataset else ""))
        return EXIT_OK
    stats = {
        "path": str(context.store.path),
        "bytes": context.store.size_bytes(),
        "files": [
            {"dataset": d, "kind": k, "count": n, "compressed_bytes": b}
            for d, k, n, b in context.store.file_stats(args.dataset)
        ],
    }
    print(json.dumps(stats, indent=1))
    return EXIT_OK


def cmd_export(args: argparse.Namespace, context: Context) -> int:
    """Export a neuron's published and generated explanations (upstream-readable JSON)."""

    async def published(service: NeuronService) -> Fetched[Any] | None:
        try:
            return await service.get(args.dataset, Kind.EXPLANATIONS, args.layer, args.neuron)
        except (NotFound, NotAvailableOffline):
            return None

    dataset = context.registry.get(args.dataset)
    dataset.check(args.layer, args.neuron)
    fetched = (
        with_service(context, False, published) if Kind.EXPLANATIONS in dataset.kinds else None
    )
    export = export_neuron(
        context.store,
        dataset.name,
        args.layer,
        args.neuron,
        fetched.value if fetched is not None else None,
    )
    text = codec.dumps(export.results, upstream=True)
    if args.output is None:
        print(text)
        return EXIT_OK
    args.output.write_text(text + "\n", encoding="utf-8")
    sidecar = args.output.with_name(args.output.name + ".provenance.json")
    sidecar.write_text(json.dumps(export.provenance, indent=1), encoding="utf-8")
    print(f"wrote {args.output} ({len(export.results.scored_explanations)} explanations)")
    print(f"wrote {sidecar}")
    return EXIT_OK
