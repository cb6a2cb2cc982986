"""Import commands: import-neuronpedia, import-delphi (latent datasets from other tools)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neuron_desk.cli.context import EXIT_BAD_INPUT, EXIT_OK, Context
from neuron_desk.cli.output import dumps_json
from neuron_desk.core.text import for_terminal
from neuron_desk.data.foreign import ForeignImport


def register(subparsers: Any) -> None:
    """Add the import commands."""
    p = subparsers.add_parser(
        "import-neuronpedia",
        help="import Neuronpedia exports as a latent dataset",
        description="Import Neuronpedia export folders (<model>/<source>/{features,activations,"
        "explanations}/batch-N.jsonl.gz, or their batch files) as a latent dataset whose layers "
        "are the exported sources.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="export folders or batch files")
    p.add_argument("--name", required=True, help="the dataset to create (or extend)")
    p.add_argument("--model", help="the model id the rows must name (default: the export's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_import_neuronpedia)

    p = subparsers.add_parser(
        "import-delphi",
        help="import a delphi results folder as a latent dataset",
        description="Import a delphi results folder (explanations/, scores/detection, "
        "scores/fuzz) as a latent dataset whose layers are delphi's hook points.",
    )
    p.add_argument("folder", type=Path, help="the folder holding explanations/ and scores/")
    p.add_argument("--name", required=True, help="the dataset to create (or extend)")
    p.add_argument("--model", help="the model's name (default: run_config.json's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_import_delphi)


def cmd_import_neuronpedia(args: argparse.Namespace, context: Context) -> int:
    """Import Neuronpedia exports."""
    report = context.desk.import_neuronpedia(args.paths, name=args.name, model=args.model)
    return _report(report, args.json)


def cmd_import_delphi(args: argparse.Namespace, context: Context) -> int:
    """Import a delphi results folder."""
    report = context.desk.import_delphi(args.folder, name=args.name, model=args.model)
    return _report(report, args.json)


def _report(report: ForeignImport, as_json: bool) -> int:
    """Print what was imported; each refusal on stderr; exit 2 if anything was refused."""
    if as_json:
        print(dumps_json(report.to_json(), indent=1))
    else:
        for refusal in report.refused:
            said = refusal.reason.startswith(refusal.where)
            line = f"refused {refusal.reason if said else f'{refusal.where}: {refusal.reason}'}"
            print(for_terminal(line, keep_newlines=False), file=sys.stderr)
        for note in [*report.notes, *report.skipped]:
            print(f"note: {for_terminal(note, keep_newlines=False)}", file=sys.stderr)
        print(
            f"imported {report.imported} latents into {report.dataset} from {report.tool} "
            f"({report.explanations} explanations, {report.scores} scores; "
            f"{len(report.refused)} refused); layers: {', '.join(report.hook_points)}"
        )
    return EXIT_OK if not report.refused else EXIT_BAD_INPUT
