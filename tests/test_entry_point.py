"""The entry point: a subcommand runs the CLI, and only that command's module is imported."""

from __future__ import annotations

import subprocess
import sys

from neuron_desk import cli


def test_every_command_is_listed_with_its_own_help() -> None:
    for name, (_key, help_text) in cli.COMMANDS.items():
        parser = cli.build_parser([name])
        subparsers = next(a for a in parser._actions if a.dest == "command")
        listed = {a.dest: a.help for a in subparsers._choices_actions}  # type: ignore[attr-defined]
        assert listed[name] == help_text, name
    full = cli.build_parser(["show"])
    assert full.parse_args(["show", "d", "1", "2", "--json"]).json is True


def test_help_and_version_import_no_command_module() -> None:
    code = (
        "import sys; from neuron_desk import cli; cli.build_parser(['--help']); "
        "print(sorted(m for m in sys.modules if m.startswith('neuron_desk')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)
    assert "neuron_desk.desk" not in loaded and "neuron_desk.cli.data" not in loaded
    assert not any(m.startswith(("neuron_desk.llm", "neuron_desk.method")) for m in loaded)
    done = subprocess.run(
        [sys.executable, "-m", "neuron_desk", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("neuron-desk ")
