"""The `neuron-desk` command line: subcommands for everything that is not looking.

Output is made safe for a terminal in one place: stdout is wrapped so every control character,
bidi override, zero-width character or lone surrogate from a file or a model is printed as an
escape (`\\u001b`), and the one-line error on stderr is escaped and bounded the same way.

Each command module registers its subcommands (`register(subparsers)`) and sets `run` to a
function of the parsed arguments and a `Context` that opens the desk on demand. Errors are one
line on stderr (a traceback only with --debug); exit codes: 0 success, 1 not found or not
available offline, 2 bad arguments or bad input. Plain `neuron-desk` (no subcommand) starts the
app: that is decided by the entry point, `neuron_desk.__main__`, not here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from neuron_desk import __version__
from neuron_desk.cli.context import EXIT_BAD_INPUT, Context, exit_code_of
from neuron_desk.core.errors import bounded
from neuron_desk.core.text import TerminalWriter, for_terminal

COMMANDS: dict[str, tuple[str, str]] = {
    "datasets": ("data", "list the datasets"),
    "show": ("data", "show what is known about a neuron or latent"),
    "fetch": ("data", "fetch and store a neuron or a range of neurons"),
    "import": ("data", "import files in the public layout, or single files"),
    "import-neuronpedia": ("imports", "import Neuronpedia exports as a latent dataset"),
    "import-delphi": ("imports", "import a delphi results folder as a latent dataset"),
    "neurons": ("data", "list the neurons (or latents) of a dataset"),
    "search": ("data", "search published and generated explanations"),
    "cache": ("data", "show or clear the stored files"),
    "export": ("data", "export a neuron's (or latent's) explanations and scores"),
    "explain": ("llm", "have an LLM explain a neuron or latent, and score the explanations"),
    "score": ("llm", "score an explanation of a neuron or latent by simulation"),
    "llm-usage": ("llm", "tokens used by LLM requests, per endpoint"),
    "batch": ("batch", "explain and score many neurons (rerun the same command to resume)"),
}
"""Every subcommand: the module that registers it, and its one line of help (for the list that
`--help` prints without importing any command module)."""


def command_module(key: str) -> ModuleType:
    """The command module called `key` ("data", "llm", "imports", "batch"), imported now."""
    if key == "data":
        from neuron_desk.cli import data

        return data
    if key == "llm":
        from neuron_desk.cli import llm

        return llm
    if key == "imports":
        from neuron_desk.cli import imports

        return imports
    from neuron_desk.cli import batch

    return batch


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is not an option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--screenshot":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only the module of the subcommand in `argv` is imported (all of
    them when `argv` is None); the others are listed by name and help."""
    argv = sys.argv[1:] if argv is None else argv
    command = _command_in(argv)
    wanted = {COMMANDS[command][0]} if command in COMMANDS else set()
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
    for key in dict.fromkeys(module for module, _ in COMMANDS.values()):
        if key in wanted:
            command_module(key).register(subparsers)
    for name, (_, help_text) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


EXIT_CLOSED_PIPE = 141
"""128 + SIGPIPE, as shells report a command whose reader closed the pipe."""


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def configure_logging(args: argparse.Namespace) -> None:
    """Debug logs with --debug, warnings otherwise."""
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand (without one: print the usage, exit 2)."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_BAD_INPUT
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; one line on stderr and an exit code if it fails."""
    configure_logging(args)
    context = Context()
    stdout = sys.stdout
    sys.stdout = TerminalWriter(stdout)  # text from files and models is printed escaped
    try:
        result: int = args.run(args, context)
        return result
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        _silence_stdout()
        return EXIT_CLOSED_PIPE
    except Exception as exc:  # one clear line, never a traceback unless --debug
        if args.debug:
            raise
        print(f"neuron-desk: {for_terminal(bounded(str(exc), 2000))}", file=sys.stderr)
        return exit_code_of(exc)
    finally:
        sys.stdout = stdout
        context.close()
