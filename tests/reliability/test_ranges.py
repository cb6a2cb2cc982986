"""Ranges and batches keep going: a bad file or an unusable neuron is recorded with its reason
and skipped, the run ends with a summary and exit 1, and a rerun retries only those; a batch
neuron is done only when all its samples are stored.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from neuron_desk.cli import main
from neuron_desk.core.paths import Paths
from neuron_desk.data.registry import Registry
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Faults, Mirror
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.reliability.test_border import folder_dataset, record_json, write
from tests.synthetic import oracle


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "")
    return tmp_path / "home"


def register(home: Path, *datasets: Any) -> None:
    store = Store.open(Paths.from_env().store)
    registry = Registry(store)
    for dataset in datasets:
        registry.add(dataset)
    store.close()


def test_one_bad_file_does_not_stop_a_fetch_range_and_a_rerun_retries_only_it(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "public"
    for n in range(8):
        write(root / f"collated-activations/1/{n}.json", json.dumps(record_json(1, n)))
    write(root / "collated-activations/1/3.json", json.dumps(record_json(1, 7)))  # wrong id
    faults = Faults()
    with Mirror(root, faults) as mirror:
        register(home, mirror_dataset(mirror.base_url))
        argv = ["fetch", "mirror", "1", "0-7", "--kinds", "activations"]
        first = main(argv)
        out, err = capsys.readouterr()
        assert first == 1
        assert "fetched 7" in out and "failed 1" in out and "1:3" in err
        faults.requests.clear()
        again = main(argv)
        out, _ = capsys.readouterr()
    assert again == 1 and "already stored 7" in out
    assert faults.requests == ["collated-activations/1/3.json"]
    store = Store.open(Paths.from_env().store)
    failures = store.get_json("meta", "fetch-failures:mirror")
    store.close()
    assert list(failures) == ["1:3 activations"] and "not 1:3" in failures["1:3 activations"]


def batch_argv(base_url: str, *extra: str) -> list[str]:
    return [
        "batch",
        "folder",
        "--layers",
        "0",
        "--neurons",
        "0-3",
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--method",
        "chat",
        "--name",
        "rel",
        "--json",
        *extra,
    ]


def explanation_rows(home: Path) -> list[tuple[int, int]]:
    db = sqlite3.connect(home / "store.sqlite3")
    try:
        return db.execute(
            "SELECT layer, neuron FROM explanations "
            "WHERE json_extract(provenance, '$.run') = 'batch-rel' ORDER BY layer, neuron, id"
        ).fetchall()
    finally:
        db.close()


def folder_with_records(root: Path) -> None:
    for n in range(4):
        write(root / f"collated-activations/0/{n}.json", json.dumps(record_json(0, n, seed=n)))


def test_an_unusable_neuron_fails_alone_and_the_batch_goes_on(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "folder"
    folder_with_records(root)
    few = record_json(0, 1)
    few["most_positive_activation_records"] = few["most_positive_activation_records"][:1]
    few["random_sample"] = few["random_sample"][:1]
    write(root / "collated-activations/0/1.json", json.dumps(few))
    surrogate = record_json(0, 2, seed=2)
    surrogate["most_positive_activation_records"][0]["tokens"][0] = "\ud800"
    write(root / "collated-activations/0/2.json", json.dumps(surrogate))
    register(home, folder_dataset(root))
    with FakeServer(FakeOpenAI(neuron=oracle, explanation=" words")) as server:
        code = main(batch_argv(server.base_url))
        out, _ = capsys.readouterr()
    summary = json.loads(out)
    assert code == 1
    assert summary["explained"] == 3 and summary["failed"] + summary["no_data"] == 1
    assert [e.split(":")[0:2] for e in summary["errors"]] == [["0", "1"]]
    assert sorted({n for _, n in explanation_rows(home)}) == [0, 2, 3]


def test_a_neuron_is_done_only_when_all_its_samples_are_stored(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "folder"
    folder_with_records(root)
    register(home, folder_dataset(root))
    with FakeServer(FakeOpenAI(neuron=oracle, explanation=" words")) as server:
        assert main(batch_argv(server.base_url, "--samples", "2")) == 0
        capsys.readouterr()
        assert len(explanation_rows(home)) == 8
        db = sqlite3.connect(home / "store.sqlite3")  # as a kill -9 between two samples leaves it
        db.execute(
            "DELETE FROM explanations WHERE id = (SELECT MAX(id) FROM explanations "
            "WHERE json_extract(provenance, '$.run') = 'batch-rel' AND neuron = 2)"
        )
        db.commit()
        db.close()
        assert main(batch_argv(server.base_url, "--samples", "2")) == 0
        out, _ = capsys.readouterr()
    summary = json.loads(out)
    assert summary["done_before"] == 3 and summary["explained"] == 1 and summary["done"] == 4
    rows = explanation_rows(home)
    assert len(rows) == 8 and rows.count((0, 2)) == 2
