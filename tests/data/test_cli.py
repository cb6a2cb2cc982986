"""The data commands, run in-process against a mirror and an isolated store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from neuron_desk.cli import main
from neuron_desk.core import codec
from neuron_desk.core.model import NeuronSimulationResults, ScoredExplanation, ScoredSimulation
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Registry
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Mirror


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Mirror) -> Path:
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    store = Store.open(Paths.from_env().store)
    Registry(store).add(mirror_dataset(mirror.base_url))
    store.close()
    return tmp_path / "home"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "show", "mirror", "0", "2", "--json")
    assert code == 0
    shown = json.loads(out)
    assert {
        "dataset",
        "layer",
        "neuron",
        "max_activation",
        "counts",
        "explanations",
        "top_tokens",
        "related",
    } <= set(shown)
    assert shown["counts"]["top"] == 20
    assert shown["explanations"][0] == {
        "explanation": " words with the letter e (0:2)",
        "score": 0.42,
        "source": "published",
    }


def test_show_offline_and_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "show", "mirror", "0", "4", "--offline")
    assert code == 1 and "not available offline" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "show", "mirror", "9", "0")
    assert code == 2 and err.strip() == "neuron-desk: mirror has layers 0-1; there is no layer 9"
    code, _, err = run_cli(capsys, "show", "nope", "0", "0")
    assert code == 2 and "no dataset named 'nope'" in err
    assert run_cli(capsys, "show", "mirror", "0", "4")[0] == 0
    assert run_cli(capsys, "show", "mirror", "0", "4", "--offline")[0] == 0


def test_fetch_neurons_search_cache(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_cli(capsys, "fetch", "mirror", "0", "0-1", "--kinds", "activations")
    assert code == 0 and "fetched 2" in out and err == ""  # no progress line into a pipe
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a progress line
    code, out, err = run_cli(
        capsys, "fetch", "mirror", "0", "0-5", "--kinds", "activations", "explanations"
    )
    assert code == 0 and "fetched 10, already stored 2" in out and "12/12" in err
    code, out, _ = run_cli(capsys, "neurons", "mirror", "--offline", "--json")
    assert json.loads(out) == [{"layer": 0, "neuron": n} for n in range(6)]
    code, out, _ = run_cli(capsys, "search", "letter", "--json")
    assert code == 0 and len(json.loads(out)) == 6
    code, out, _ = run_cli(capsys, "cache", "stats", "--dataset", "mirror")
    assert {f["kind"]: f["count"] for f in json.loads(out)["files"]} == {
        "activations": 6,
        "explanations": 6,
    }
    code, out, _ = run_cli(capsys, "cache", "clear", "--dataset", "mirror")
    assert out.strip() == "removed 12 stored files of mirror"
    assert run_cli(capsys, "search", "letter")[0] == 1
    code, out, _ = run_cli(capsys, "search", "letter", "--json")
    assert (code, json.loads(out)) == (1, [])  # no match: 1 in both modes


def test_import_layout_and_single_files(
    home: Path, layout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = tmp_path / "downloaded.json"
    single.write_text((layout / "collated-activations/1/1.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"neuron_id": {"layer_index": 0, "neuron_index": 0}, "most_positive_activation_records": [{"tokens": 3}]}'
    )
    code, out, err = run_cli(
        capsys, "import", str(layout / "explanations"), str(single), str(bad), "--dataset", "mirror"
    )
    assert code == 2
    assert "imported 9 files into mirror" in out
    assert "bad.json" in err and "most_positive_activation_records[0].tokens" in err
    code, out, _ = run_cli(capsys, "neurons", "mirror", "--offline", "--json")
    assert {"layer": 1, "neuron": 1} in json.loads(out)


def test_export_reads_back(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(Paths.from_env().store)
    mine = ScoredExplanation(
        " my hypothesis", ScoredSimulation([], ev_correlation_score=0.9, method="x", model="m")
    )
    Explanations(store).add(
        NeuronRef("mirror", 0, 1),
        " my hypothesis",
        0.9,
        "user",
        {"model": "m", "endpoint": "http://127.0.0.1"},
        codec.dumps(mine),
    )
    store.close()
    target = tmp_path / "out.jsonl"
    code, _out, _ = run_cli(capsys, "export", "mirror", "0", "1", "-o", str(target))
    assert code == 0
    results = codec.loads(target.read_text(), NeuronSimulationResults)
    assert [e.explanation for e in results.scored_explanations] == [
        " words with the letter e (0:1)",
        " my hypothesis",
    ]
    assert "method" not in target.read_text()  # upstream fields only
    provenance = json.loads((tmp_path / "out.jsonl.provenance.json").read_text())
    assert [p["source"] for p in provenance] == ["published", "user"]
    assert provenance[1]["endpoint"] == "http://127.0.0.1"


def test_datasets_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _ = run_cli(capsys, "datasets", "--json")
    names = [d["name"] for d in json.loads(out)]
    assert "gpt2-xl" in names and "gpt2-small" in names and "mirror" in names


def test_show_excerpts_export_offline_and_bad_arguments(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "show", "mirror", "0", "1", "--excerpts", "2")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("  excerpt ")]
    assert len(lines) == 2 and lines[0].startswith("  excerpt 1 (max ")
    code, out, _ = run_cli(capsys, "show", "mirror", "0", "1", "--excerpts", "1", "--json")
    (excerpt,) = json.loads(out)["excerpts"]
    assert excerpt["tokens"] and excerpt["tokens"][0][1] == excerpt["max_activation"]
    # Offline, a neuron whose published file was never fetched: exported without it, said so.
    store = Store.open(Paths.from_env().store)
    Explanations(store).add(NeuronRef("mirror", 0, 4), "mine", 0.5, "user", {})
    store.close()
    target = tmp_path / "offline.jsonl"
    code, _, err = run_cli(
        capsys, "export", "mirror", "0", "4", "--offline", "-o", str(target)
    )
    assert code == 0 and "not available offline" in err
    results = codec.loads(target.read_text(), NeuronSimulationResults)
    assert [e.explanation for e in results.scored_explanations] == ["mine"]
    for bad in (["fetch", "mirror", "0", "0-1", "--concurrency", "0"],
                ["batch", "mirror", "--layers", "0", "--budget-tokens", "0"],
                ["score", "mirror", "0", "1", "--explanation", "e", "--budget-usd", "0"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            run_cli(capsys, *bad)
        assert exit_info.value.code == 2
        assert "must be" in capsys.readouterr().err


@pytest.fixture
def unreachable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose mirror dataset points at a port nothing listens at."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    store = Store.open(Paths.from_env().store)
    Registry(store).add(mirror_dataset(f"http://127.0.0.1:{port}"))
    store.close()
    return tmp_path / "home"


def test_fetch_from_an_unreachable_host_gives_up_and_lists_every_failure(
    unreachable_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "fetch", "mirror", "1", "0-7", "--kinds", "activations", "explanations",
        "--concurrency", "2",
    )  # fmt: skip
    assert code == 1 and "failed 16" in out
    groups = [line for line in err.splitlines() if " × " in line]
    assert sum(int(line.split(" × ")[0]) for line in groups) == 16  # every failure accounted
    skipped = next(line for line in groups if "not tried again yet" in line)
    assert int(skipped.split(" × ")[0]) >= 16 - 2  # only the first ones in flight were tried


def test_json_output_writes_null_for_nan(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An imported NaN score comes out of `show --json` as null, which strict parsers accept."""
    folder = tmp_path / "layout" / "explanations" / "0"
    folder.mkdir(parents=True)
    line = (
        '{"neuron_id": {"layer_index": 0, "neuron_index": 2}, "scored_explanations": '
        '[{"explanation": " nan score", "scored_simulation": {"scored_sequence_simulations": [], '
        '"ev_correlation_score": NaN}}]}'
    )
    (folder / "2.jsonl").write_text(line + "\n")
    code, _, err = run_cli(capsys, "import", str(folder / "2.jsonl"), "--dataset", "mirror")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "show", "mirror", "0", "2", "--json")
    assert code == 0
    assert "NaN" not in out

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    shown = json.loads(out, parse_constant=refuse)
    scores = {e["explanation"]: e["score"] for e in shown["explanations"]}
    assert scores[" nan score"] is None


def test_show_of_a_neuron_that_could_not_be_fetched_fails(
    unreachable_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file unreachable: each kind says why, and the exit code says it failed (it was 0,
    as if the neuron had been shown)."""
    code, out, err = run_cli(capsys, "show", "mirror", "1", "3")
    assert code == 1, out
    assert "could not connect" in out and "could not connect" in err.splitlines()[-1]
    assert "Traceback" not in err
