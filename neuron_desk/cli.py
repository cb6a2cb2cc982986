"""The `neuron-desk` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from neuron_desk import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="neuron-desk",
        description="Browse the neurons of a language model, explain them and score the explanations.",
    )
    parser.add_argument("--version", action="version", version=f"neuron-desk {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand, or print help when none is given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
