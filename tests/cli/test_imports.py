"""The import commands, run in-process on an isolated home, then the imported latents shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuron_desk.cli import COMMANDS, build_parser, main

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_commands_are_listed() -> None:
    assert COMMANDS["import-neuronpedia"][0] == COMMANDS["import-delphi"][0] == "imports"
    help_text = build_parser([]).format_help()
    assert "import-neuronpedia" in help_text and "import-delphi" in help_text


def test_import_neuronpedia_then_show_offline(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "import-neuronpedia", str(FIXTURES / "neuronpedia"), "--name", "np"
    )
    assert code == 0, err
    assert out.startswith("imported 3 latents into np from Neuronpedia")
    assert "layers: 9-res-jb, 10-res-jb" in out

    code, out, _ = run_cli(capsys, "datasets", "--json")
    spec = next(d for d in json.loads(out) if d["name"] == "np")
    assert spec["dictionary"]["hook_points"] == ["9-res-jb", "10-res-jb"]
    assert spec["origin"] == "folder"

    code, out, _ = run_cli(capsys, "neurons", "np", "--offline", "--json")
    assert json.loads(out) == [
        {"layer": 0, "neuron": 0},
        {"layer": 0, "neuron": 5},
        {"layer": 1, "neuron": 3},
    ]

    code, out, _ = run_cli(capsys, "show", "np", "0", "5", "--offline", "--excerpts", "1")
    assert code == 0
    assert "\\n" in out and "\\t" in out  # the tokens' newline and tab, escaped for the terminal
    assert "newlines and tabs in <code>" in out


def test_import_delphi_json_report(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = FIXTURES / "delphi" / "smollm2-run"
    code, out, _ = run_cli(capsys, "import-delphi", str(folder), "--name", "smol", "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["imported"], report["refused"], report["scores"]) == (3, 0, 3)
    assert report["hook_points"] == ["layers.9", "layers.10"]

    code, out, _ = run_cli(capsys, "show", "smol", "0", "131", "--offline", "--json")
    shown = json.loads(out)
    assert shown["counts"]["top"] == 3 and shown["counts"]["random"] == 4
    assert {e["source"] for e in shown["explanations"]} == {"imported from delphi"}

    code, again, _ = run_cli(capsys, "import-delphi", str(folder), "--name", "smol", "--json")
    assert json.loads(again)["imported"] == 3  # idempotent: same counts again
    code, out, _ = run_cli(capsys, "show", "smol", "0", "131", "--offline", "--json")
    assert len(json.loads(out)["explanations"]) == len(shown["explanations"])


def test_refusals_are_reported_one_line_each_and_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = FIXTURES / "delphi-malformed" / "run"
    code, out, err = run_cli(capsys, "import-delphi", str(folder), "--name", "bad")
    assert code == 2
    assert "imported 1 latents" in out and "4 refused" in out
    refused = [line for line in err.splitlines() if line.startswith("refused ")]
    assert len(refused) == 4
    assert any("(at activating)" in line for line in refused)
    assert any(line.count("oops.txt") == 1 for line in refused)  # the file named once


def test_bad_names_and_folders_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = str(FIXTURES / "neuronpedia")
    code, _, err = run_cli(capsys, "import-neuronpedia", export, "--name", "a/b")
    assert code == 2 and "not a dataset name" in err
    code, _, err = run_cli(capsys, "import-neuronpedia", export, "--name", "gpt2-xl")
    assert code == 2 and "not a Neuronpedia import" in err
    code, _, err = run_cli(capsys, "import-delphi", str(home), "--name", "x")
    assert code == 2 and "not a delphi results folder" in err
