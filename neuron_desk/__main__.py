"""The `neuron-desk` entry point: a subcommand runs the command line, none starts the app.

The command line and the app are independent siblings; only this module knows both.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from neuron_desk import cli
from neuron_desk.cli.context import EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand, or start the desktop app when none is given."""
    args = cli.build_parser(argv).parse_args(argv)
    if args.command is not None:
        return cli.run_command(args)
    cli.configure_logging(args)
    try:
        from neuron_desk.qt.app import run_app
    except ImportError as exc:
        print(f"neuron-desk: the desktop app is not available: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(run_app(args.screenshot))


if __name__ == "__main__":
    sys.exit(main())
