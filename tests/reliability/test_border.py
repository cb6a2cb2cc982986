"""The border: every way a file comes in (import, folder, mirror) refuses what is wrong, names
the file and field in one bounded line, and stores nothing refused.

Each test reproduces a finding of the hostile-data attack; on the code before the validation
module each of them failed (garbage accepted, a wrong neuron stored, a traceback).
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuron_desk.cli import main
from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError, DataError
from neuron_desk.core.model import NeuronId
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.importer import import_paths
from neuron_desk.data.registry import ALL_KINDS, Dataset, Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Faults, Mirror
from tests.synthetic import neuron_record


def record_json(layer: int, neuron: int, seed: int = 1) -> dict[str, Any]:
    record = neuron_record(seed=seed)
    record.neuron_id = NeuronId(layer, neuron)
    value: dict[str, Any] = json.loads(codec.dumps(record))
    return value


def folder_dataset(root: Path) -> Dataset:
    return Dataset(
        name="folder",
        title="Test folder",
        model="synthetic",
        n_layers=2,
        n_neurons=8,
        kinds=ALL_KINDS,
        tokenizer="gpt2",
        folder=str(root),
    )


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def get(service: NeuronService, ref: NeuronRef, kind: Kind = Kind.ACTIVATIONS) -> Any:
    async def go() -> Any:
        try:
            return await service.get(ref, kind)
        finally:
            await service.aclose()

    return asyncio.run(go())


def test_a_mirror_file_for_another_neuron_is_refused_and_not_stored(
    tmp_path: Path, store: Store
) -> None:
    root = tmp_path / "public"
    write(root / "collated-activations/1/5.json", json.dumps(record_json(1, 1)))
    with Mirror(root, Faults()) as mirror:
        registry = Registry(store, bundled=[])
        registry.add(mirror_dataset(mirror.base_url))
        service = NeuronService(registry, store, http_retries=0)
        with pytest.raises(CodecError, match=r"neuron 1:1, not 1:5.*neuron_id"):
            get(service, NeuronRef("mirror", 1, 5))
    assert store.get_file(NeuronRef("mirror", 1, 5), "activations") is None
    assert store.get_file(NeuronRef("mirror", 1, 1), "activations") is None


def test_a_folder_file_claiming_a_neuron_outside_the_shape_is_refused(
    tmp_path: Path, store: Store
) -> None:
    root = tmp_path / "folder"
    write(root / "collated-activations/0/3.json", json.dumps(record_json(0, 3000)))
    registry = Registry(store, bundled=[])
    registry.add(folder_dataset(root))
    service = NeuronService(registry, store)
    with pytest.raises(CodecError, match="outside folder"):
        get(service, NeuronRef("folder", 0, 3))
    assert store.stored_neurons("folder") == []


# --- malformed variants of a valid record (hypothesis) ---


def _records(value: dict[str, Any]) -> list[dict[str, Any]]:
    return value["most_positive_activation_records"] + value["random_sample"]


def _nonfinite(value: dict[str, Any], i: int, j: int, choice: int) -> None:
    record = _records(value)[i % len(_records(value))]
    record["activations"][j % len(record["activations"])] = [math.nan, math.inf, -math.inf][
        choice % 3
    ]


def _shorter_tokens(value: dict[str, Any], i: int, j: int, choice: int) -> None:
    record = _records(value)[i % len(_records(value))]
    record["tokens"].pop(j % len(record["tokens"]))


def _longer_activations(value: dict[str, Any], i: int, j: int, choice: int) -> None:
    record = _records(value)[i % len(_records(value))]
    record["activations"].append(float(j))


def _unknown_dataclass(value: dict[str, Any], i: int, j: int, choice: int) -> None:
    target = [value, value["neuron_id"], _records(value)[i % len(_records(value))]][choice % 3]
    target["dataclass_name"] = f"Evil{j}"


MUTATIONS = [_nonfinite, _shorter_tokens, _longer_activations, _unknown_dataclass]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mutation=st.sampled_from(MUTATIONS),
    i=st.integers(0, 1000),
    j=st.integers(0, 1000),
    choice=st.integers(0, 2),
)
def test_no_malformed_variant_of_a_record_is_imported(
    tmp_path: Path, store: Store, mutation: Any, i: int, j: int, choice: int
) -> None:
    value = record_json(0, 2)
    mutation(value, i, j, choice)
    path = write(tmp_path / "collated-activations/0/2.json", json.dumps(value))
    result = import_paths(store, Registry(store).get("gpt2-xl"), [path])
    assert result.imported == []
    assert len(result.rejected) == 1
    message = result.rejected[0][1]
    assert str(path) in message and "(at " in message and "\n" not in message
    assert store.get_file(NeuronRef("gpt2-xl", 0, 2), "activations") is None


def test_a_bad_file_never_replaces_a_good_one(tmp_path: Path, store: Store) -> None:
    gpt2 = Registry(store).get("gpt2-xl")
    good = write(tmp_path / "good/collated-activations/0/2.json", json.dumps(record_json(0, 2)))
    assert import_paths(store, gpt2, [good]).imported
    before = store.get_file(NeuronRef("gpt2-xl", 0, 2), "activations")
    bad_value = record_json(0, 2, seed=9)
    _nonfinite(bad_value, 0, 0, 1)
    bad = write(tmp_path / "bad/collated-activations/0/2.json", json.dumps(bad_value))
    assert import_paths(store, gpt2, [bad]).rejected
    after = store.get_file(NeuronRef("gpt2-xl", 0, 2), "activations")
    assert before is not None and after is not None and after.text == before.text


def test_huge_integers_name_file_and_field_and_the_rest_is_imported(
    tmp_path: Path, store: Store
) -> None:
    bad_value = record_json(0, 1)
    bad_value["most_positive_activation_records"][0]["activations"][3] = 12345.678
    text = json.dumps(bad_value).replace("12345.678", "1" + "0" * 400, 1)
    bad = write(tmp_path / "a/collated-activations/0/1.json", text)
    good = write(tmp_path / "b/collated-activations/0/4.json", json.dumps(record_json(0, 4)))
    result = import_paths(store, Registry(store).get("gpt2-xl"), [bad, good])
    assert [p for p, _ in result.rejected] == [bad]
    assert str(bad) in result.rejected[0][1] and "activations[" in result.rejected[0][1]
    assert [ref.index for _, _, ref in result.imported] == [4]


def test_a_huge_json_key_gives_one_bounded_line(tmp_path: Path, store: Store) -> None:
    value = record_json(0, 1)
    value["k" * 1_000_000] = 1
    path = write(tmp_path / "collated-activations/0/1.json", json.dumps(value))
    result = import_paths(store, Registry(store).get("gpt2-xl"), [path])
    (message,) = [m for _, m in result.rejected]
    assert len(message) < 1000 and "unknown field" in message


def test_lone_surrogates_are_replaced_and_the_import_completes(
    tmp_path: Path, store: Store
) -> None:
    value = record_json(0, 6)
    value["most_positive_activation_records"][0]["tokens"][0] = "\ud800bad"
    record = write(tmp_path / "collated-activations/0/6.json", json.dumps(value))
    results = {
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 6},
        "scored_explanations": [
            {
                "explanation": " surrogate \udfff here",
                "scored_simulation": {
                    "scored_sequence_simulations": [],
                    "ev_correlation_score": 0.5,
                },
            }
        ],
    }
    expl = write(tmp_path / "explanations/0/6.jsonl", json.dumps(results) + "\n")
    result = import_paths(store, Registry(store).get("gpt2-xl"), [record, expl])
    assert result.rejected == [] and len(result.imported) == 2
    assert len(result.repaired) == 2
    stored = store.get_file(NeuronRef("gpt2-xl", 0, 6), "activations")
    assert stored is not None
    stored.text.encode("utf-8")  # no lone surrogate left
    tokens = json.loads(stored.text)["most_positive_activation_records"][0]["tokens"]
    assert tokens[0] == "\ufffdbad"
    (row,) = Explanations(store).search("surrogate")
    assert row.explanation == " surrogate \ufffd here"


def test_a_bundled_dataset_is_read_only(tmp_path: Path, store: Store) -> None:
    registry = Registry(store)
    bundled = next(d for d in registry.all() if d.bundled)
    path = write(tmp_path / "collated-activations/1/1.json", json.dumps(record_json(1, 1)))
    with pytest.raises(DataError, match="read-only"):
        import_paths(store, bundled, [path])
    assert store.stored_neurons(bundled.name) == []


def test_show_exits_2_when_a_file_was_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "public"
    write(root / "collated-activations/0/3.json", json.dumps(record_json(0, 1)))
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    with Mirror(root, Faults()) as mirror:
        store = Store.open(Paths.from_env().store)
        Registry(store).add(mirror_dataset(mirror.base_url))
        store.close()
        code = main(["show", "mirror", "0", "3"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "refused" in err and "collated-activations/0/3.json" in err
