"""Data commands: datasets, show, fetch, import, neurons, search, cache, export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neuron_desk.cli.context import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    Context,
    parse_range,
    positive_int,
)
from neuron_desk.cli.output import dumps_json
from neuron_desk.cli.progress import ProgressLine
from neuron_desk.core.errors import CodecError, NeuronDeskError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.text import for_terminal
from neuron_desk.data.importer import import_paths
from neuron_desk.data.registry import Kind
from neuron_desk.data.service import Fetched
from neuron_desk.desk import Desk


def register(subparsers: Any) -> None:
    """Add the data commands."""
    p = subparsers.add_parser("datasets", help="list the datasets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_datasets)

    p = subparsers.add_parser("show", help="show what is known about a neuron or latent")
    _neuron_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--offline", action="store_true", help="use only the store and bundled data")
    p.add_argument(
        "--excerpts",
        type=int,
        default=0,
        metavar="N",
        help="print the N top-activating excerpts as text, with the tokens' activations",
    )
    p.set_defaults(run=cmd_show)

    p = subparsers.add_parser("fetch", help="fetch and store a neuron or a range of neurons")
    p.add_argument("dataset")
    p.add_argument("layer", type=int)
    p.add_argument("neurons", type=parse_range, help="a neuron or a range such as 0-99")
    p.add_argument("--kinds", nargs="+", choices=[k.value for k in Kind], help="default: all")
    p.add_argument("--concurrency", type=positive_int, default=8, help="files at a time (8)")
    p.add_argument(
        "--recheck-absent",
        action="store_true",
        help="ask again for files the source had not (404); otherwise re-asked after a week",
    )
    p.set_defaults(run=cmd_fetch)

    p = subparsers.add_parser("import", help="import files in the public layout, or single files")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--dataset", default="gpt2-xl", help="dataset to file them under (gpt2-xl)")
    p.add_argument(
        "--store",
        action="store_true",
        help="the paths are other neuron-desk stores: import their own results (provenance "
        "kept) and cached responses, e.g. to merge a job split across machines",
    )
    p.set_defaults(run=cmd_import)

    p = subparsers.add_parser("neurons", help="list the neurons (or latents) of a dataset")
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

    p = subparsers.add_parser(
        "export", help="export a neuron's (or latent's) explanations and scores"
    )
    _neuron_arguments(p)
    p.add_argument("--offline", action="store_true", help="use only the store and bundled data")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(run=cmd_export)


def _neuron_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset")
    p.add_argument("layer", type=int)
    p.add_argument("neuron", type=int)


def cmd_datasets(args: argparse.Namespace, context: Context) -> int:
    """List datasets."""
    datasets = context.desk.registry.all()
    if args.json:
        print(dumps_json([{**d.to_spec(), "origin": d.origin} for d in datasets], indent=1))
        return EXIT_OK
    for d in datasets:
        print(f"{d.name:16} {d.n_layers:3} x {d.n_neurons:<6} {d.units:8} {d.origin:8} {d.title}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, context: Context) -> int:
    """Show one neuron (or latent)."""
    ref = context.desk.ref(args.dataset, args.layer, args.neuron)

    async def show(desk: Desk) -> tuple[Any, dict[str, Any]]:
        data = await desk.neuron(ref)
        return data, desk.describe(data)

    data, summary = context.run(show, offline=args.offline)
    excerpts = _excerpts(data, args.excerpts)
    if args.json:
        if args.excerpts:
            summary["excerpts"] = excerpts
        print(dumps_json(summary, indent=1, ensure_ascii=False))
    else:
        _print_summary(summary)
        _print_excerpts(excerpts)
    for kind in Kind:
        fetched = data.of_kind(kind)
        if isinstance(fetched, Fetched) and fetched.repaired:
            what = data.dataset.label_of(kind)
            print(f"neuron-desk: note: the {what}: {fetched.repaired}", file=sys.stderr)
    refused = [kind for kind in Kind if isinstance(data.of_kind(kind), CodecError)]
    if refused:
        for kind in refused:
            print(f"neuron-desk: refused {for_terminal(str(data.of_kind(kind)))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(data.record, NeuronDeskError) and not summary["explanations"]:
        # nothing to show: not there, not stored for offline use, or not fetched (a network
        # failure is a failure, not an empty neuron)
        print(f"neuron-desk: {for_terminal(str(data.record))}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def _excerpts(data: Any, count: int) -> list[dict[str, Any]]:
    """The `count` top records: text, max activation, and the tokens that fired, strongest first."""
    if count <= 0 or not isinstance(data.record, Fetched):
        return []
    records = sorted(
        data.record.value.most_positive_activation_records,
        key=lambda r: max(r.activations, default=0.0),
        reverse=True,
    )
    out = []
    for record in records[:count]:
        fired = sorted(
            ((t, a) for t, a in zip(record.tokens, record.activations, strict=False) if a > 0),
            key=lambda pair: -pair[1],
        )
        out.append(
            {
                "text": "".join(record.tokens),
                "max_activation": max(record.activations, default=0.0),
                "tokens": [[t, a] for t, a in fired[:12]],
            }
        )
    return out


def _print_excerpts(excerpts: list[dict[str, Any]]) -> None:
    for i, excerpt in enumerate(excerpts, 1):
        text = excerpt["text"].replace("\n", "↵").replace("\t", "⇥")
        print(f"  excerpt {i} (max {excerpt['max_activation']:.3g}): {text}")
        tokens = " · ".join(f"{t!r} {a:.3g}" for t, a in excerpt["tokens"])
        print(f"      {tokens}")


def _print_summary(summary: dict[str, Any]) -> None:
    where = summary.get("layer_label") or f"layer {summary['layer']}"
    print(f"{summary['dataset']} {where} {summary.get('unit', 'neuron')} {summary['neuron']}")
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
    dataset = context.desk.dataset(args.dataset)
    refs = [NeuronRef(dataset.name, args.layer, n) for n in range(start, end + 1)]
    line = ProgressLine.for_args("files", False)
    report = context.run(
        lambda desk: desk.service.prefetch(
            dataset.name,
            refs,
            kinds,
            concurrency=args.concurrency,
            progress=lambda p: line.update(p.done, p.total, extra=f"failed {p.failed}"),
            recheck_absent=args.recheck_absent,
        )
    )
    line.finish()
    context.desk.record_fetch_failures(dataset.name, refs, report)
    print(
        f"fetched {report.fetched}, already stored {report.already}, absent {report.absent}, "
        f"failed {report.failed}"
    )
    for reason, where in _grouped(report.errors):
        print(f"  {len(where)} × {for_terminal(reason)}: {', '.join(where)}", file=sys.stderr)
    if report.failed:
        print("  rerun the same command to retry only the files that failed", file=sys.stderr)
    return EXIT_OK if report.failed == 0 else EXIT_NOT_FOUND


def _grouped(errors: list[str]) -> list[tuple[str, list[str]]]:
    """Prefetch errors ("layer:neuron kind: reason (url)") grouped by reason, every one kept."""
    groups: dict[str, list[str]] = {}
    for error in errors:
        where, _, reason = error.partition(": ")
        reason = reason.rsplit(" (http", 1)[0]
        groups.setdefault(reason, []).append(where)
    return sorted(groups.items(), key=lambda item: -len(item[1]))


def cmd_import(args: argparse.Namespace, context: Context) -> int:
    """Import files into the store, validating each (or other stores' results)."""
    if args.store:
        for path in args.paths:
            merged = context.desk.import_store(path)
            print(
                f"imported {merged.results} results and {merged.responses} cached responses "
                f"from {merged.path}"
            )
        return EXIT_OK
    dataset = context.desk.dataset(args.dataset)
    result = import_paths(context.desk.store, dataset, args.paths)
    for _path, message in result.rejected:
        print(f"rejected {for_terminal(message, keep_newlines=False)}", file=sys.stderr)
    for path, repaired in result.repaired:
        print(f"note: {path}: {repaired}", file=sys.stderr)
    print(f"imported {len(result.imported)} files into {dataset.name}")
    return EXIT_OK if not result.rejected else EXIT_BAD_INPUT


def cmd_neurons(args: argparse.Namespace, context: Context) -> int:
    """List neurons: all of the dataset's shape, or those stored/bundled with --offline."""
    dataset = context.desk.dataset(args.dataset)
    if args.layer is not None:
        dataset.check(args.layer, 0)
    if args.offline or dataset.bundled:
        available = context.desk.available_neurons(dataset.name, args.layer)
        neurons = [(r.layer, r.index) for r in available]
    else:
        layers = [args.layer] if args.layer is not None else range(dataset.n_layers)
        neurons = [(layer, n) for layer in layers for n in range(dataset.n_neurons)]
    if args.json:
        print(dumps_json([{"layer": layer, "neuron": n} for layer, n in neurons]))
    else:
        for layer, n in neurons:
            print(f"{layer} {n}")
    return EXIT_OK


def cmd_search(args: argparse.Namespace, context: Context) -> int:
    """Full-text search over explanations."""
    rows = context.desk.search(args.text, args.dataset)
    if args.json:
        print(
            dumps_json(
                [
                    {
                        "dataset": r.ref.dataset,
                        "layer": r.ref.layer,
                        "neuron": r.ref.index,
                        "explanation": r.explanation,
                        "score": r.score,
                        "source": r.source,
                    }
                    for r in rows
                ],
                ensure_ascii=False,
            )
        )
        return EXIT_OK if rows else EXIT_NOT_FOUND
    for r in rows:
        score = "  n/a" if r.score is None else f"{r.score:.2f}"
        print(f"{r.ref} [{score}] {r.explanation.strip()} ({r.source})")
    return EXIT_OK if rows else EXIT_NOT_FOUND


def cmd_cache(args: argparse.Namespace, context: Context) -> int:
    """Show or clear stored files."""
    desk = context.desk
    if args.action == "clear":
        count = desk.clear_cache(args.dataset)
        print(f"removed {count} stored files" + (f" of {args.dataset}" if args.dataset else ""))
        return EXIT_OK
    if args.dataset:
        desk.dataset(args.dataset)
    print(dumps_json(desk.cache_stats(args.dataset), indent=1))
    return EXIT_OK


def cmd_export(args: argparse.Namespace, context: Context) -> int:
    """Export a neuron's published and generated explanations (upstream-readable JSON)."""
    ref = context.desk.ref(args.dataset, args.layer, args.neuron)
    export = context.run(lambda desk: desk.export(ref), offline=args.offline)
    if export.missing:
        print(f"neuron-desk: exported without them: {export.missing}", file=sys.stderr)
    if args.output is None:
        print(export.text())
        return EXIT_OK
    path, sidecar = context.desk.write_export(export, args.output)
    print(f"wrote {path} ({len(export.results.scored_explanations)} explanations)")
    print(f"wrote {sidecar}")
    return EXIT_OK
