"""The `neuron-desk` command line: plain `neuron-desk` starts the app, subcommands do the rest.

Each command module registers its subcommands (`register(subparsers)`) and sets `run` to a
function of the parsed arguments and a `Context` that opens the store on demand. Errors are
one line on stderr (a traceback only with --debug); exit codes: 0 success, 1 not found or not
available offline, 2 bad arguments or bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from neuron_desk import __version__
from neuron_desk.cli.context import EXIT_BAD_INPUT, Context, exit_code_of

COMMAND_MODULES = ("neuron_desk.cli.data", "neuron_desk.cli.llm", "neuron_desk.cli.batch")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="neuron-desk",
        description="Browse the neurons of a language model, explain them with an LLM and "
        "score the explanations. Without a command, starts the app.",
    )
    parser.add_argument("--version", action="version", version=f"neuron-desk {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--screenshot",
        metavar="PNG",
        help="start the app, save the window once a neuron is shown, and quit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand, or start the app when none is given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    if args.command is None:
        return start_app(args.screenshot)
    context = Context()
    try:
        result: int = args.run(args, context)
        return result
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a traceback unless --debug
        if args.debug:
            raise
        print(f"neuron-desk: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    finally:
        context.close()


def start_app(screenshot: str | None = None) -> int:
    """Start the desktop app (the Qt layer is imported only here)."""
    try:
        from neuron_desk.qt.app import run_app
    except ImportError as exc:
        print(f"neuron-desk: the desktop app is not available: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(run_app(screenshot))


if __name__ == "__main__":
    sys.exit(main())
