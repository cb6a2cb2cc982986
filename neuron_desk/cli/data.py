"""Data commands (datasets, show, fetch, import, neurons, search, cache, export)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the data commands."""
    p = subparsers.add_parser("datasets", help="list the datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_datasets)


def _datasets(args: argparse.Namespace, context: Any) -> int:
    import json

    datasets = context.registry.all()
    if args.json:
        print(json.dumps([d.to_spec() | {"interesting": len(d.interesting)} for d in datasets], indent=1))
    else:
        for d in datasets:
            print(f"{d.name:14} {d.n_layers:3} x {d.n_neurons:<5} {d.origin:8} {d.title}")
    return 0
