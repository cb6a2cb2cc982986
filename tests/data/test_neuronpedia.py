"""Neuronpedia exports imported as a latent dataset, then opened offline through the desk."""

from __future__ import annotations

import asyncio
import gzip
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.core.errors import CodecError, UnknownDataset
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import with_second_opinions
from neuron_desk.data.registry import Kind
from neuron_desk.desk import Desk

FIXTURES = Path(__file__).parent / "fixtures"
EXPORT = FIXTURES / "neuronpedia"
MALFORMED = FIXTURES / "neuronpedia-malformed"


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk.open(Paths.at(tmp_path / "home"), bundled=[], offline=True)
    yield d
    asyncio.run(d.aclose())
    d.close()


def published(tmp_path: Path, source: Path = EXPORT) -> Path:
    """The fixture export as Neuronpedia publishes it: every batch file gzipped."""
    root = tmp_path / "v1"
    shutil.copytree(source, root)
    for batch in root.rglob("batch-*.jsonl"):
        batch.with_name(batch.name + ".gz").write_bytes(gzip.compress(batch.read_bytes()))
        batch.unlink()
    return root


def test_import_then_open_a_latent_offline(desk: Desk, tmp_path: Path) -> None:
    report = desk.import_neuronpedia([published(tmp_path)], name="np")
    assert (report.imported, report.refused, report.explanations, report.scores) == (3, [], 2, 2)
    dataset = desk.dataset("np")
    assert dataset.unit == "latent"
    assert dataset.dictionary is not None
    assert dataset.dictionary.hook_points == ("9-res-jb", "10-res-jb")
    assert (dataset.n_layers, dataset.n_neurons) == (2, 24576)  # d_sae from saelensConfig
    assert (dataset.dictionary.d_in, dataset.dictionary.architecture) == (768, "standard")
    assert dataset.dictionary.source == "imported from Neuronpedia"
    assert dataset.layer_label(1) == "SAE at 10-res-jb"
    assert [d.name for d in Desk.open(desk.paths, bundled=[]).registry.all()][-1] == "np"

    ref = desk.ref("np", 0, 0)
    data = asyncio.run(desk.neuron(ref))
    assert not isinstance(data.record, Exception) and data.record is not None
    record = data.record.value
    assert data.record.origin == "store"
    assert (record.neuron_id.layer_index, record.neuron_id.neuron_index) == (0, 0)
    top = record.most_positive_activation_records
    assert [max(r.activations) for r in top] == [31.25, 12.5]  # highest first
    assert top[1].tokens == ["<b>", "bold", "</b>", "\n", "\t", "café", " 🙂"]
    assert top[0].tokens[4] == " Paris"
    assert record.random_sample == []

    assert not isinstance(data.tokens_by_weight, Exception) and data.tokens_by_weight is not None
    weights = data.tokens_by_weight.value
    assert weights.output_positive.pairs() == [(" Paris", 1.31), ("<b>", 1.12), ("日本", 0.95)]
    assert weights.output_negative.pairs() == [(" Bah", -0.92), ("été", -0.81)]

    listed = with_second_opinions(desk.listed_explanations(data))
    assert len(listed) == 1
    (explanation,) = listed
    assert explanation.explanation == " capital cities, especially Paris"
    assert explanation.source == "imported from Neuronpedia"
    assert explanation.score is None and explanation.scored is None  # never a simulation score
    assert explanation.provenance["imported_from"] == "Neuronpedia"
    assert explanation.provenance["type"] == "oai_token-act-pair"
    assert explanation.model == "gpt-4o-mini"
    assert explanation.provenance["file"].endswith("explanations/batch-0.jsonl.gz:1")
    opinions = {o["scorer"]: o for o in explanation.opinions}
    assert set(opinions) == {"neuronpedia:eleuther_fuzz", "neuronpedia:recall_alt"}
    assert opinions["neuronpedia:eleuther_fuzz"]["value"] == 0.81
    assert opinions["neuronpedia:recall_alt"]["score_model"] == "gemini-1.5-flash"

    other = asyncio.run(desk.neuron(NeuronRef("np", 1, 3)))
    assert not isinstance(other.record, Exception) and other.record is not None
    assert other.record.value.most_positive_activation_records[0].tokens == [" über", " alles"]
    assert [r.index for r in desk.available_neurons("np")] == [0, 5, 3]
    assert desk.search("Paris", dataset="np")[0].ref == ref
    desk.offline = False
    assert desk.is_sparse("np")  # browsing steps among the imported latents, online too
    assert desk.step_with_data(ref, 1) == NeuronRef("np", 0, 5)


def test_unknown_fields_are_tolerated(desk: Desk) -> None:
    """Latent 0's feature row carries a field Neuronpedia may add one day: it still imports."""
    assert (
        "a_field_from_the_future"
        in (EXPORT / "gpt2-small/9-res-jb/features/batch-0.jsonl").read_text()
    )
    report = desk.import_neuronpedia([EXPORT], name="np")
    assert report.refused == []
    assert desk.store.get_file(NeuronRef("np", 0, 0), Kind.TOKENS_BY_WEIGHT.value) is not None


def test_malformed_rows_refuse_their_latent_with_the_field_named(desk: Desk) -> None:
    report = desk.import_neuronpedia([MALFORMED], name="bad")
    assert report.imported == 1  # latent 6's activations are fine, but its explanation is not
    reasons = {r.where: r.reason for r in report.refused}
    batch = "gpt2-small/9-res-jb/activations/batch-0.jsonl"
    assert "3 tokens but 2 values (at values)" in reasons["9-res-jb latent 2"]
    assert "(at values[1])" in reasons["9-res-jb latent 3"]
    assert "(at maxValueTokenIndex)" in reasons["9-res-jb latent 4"]
    assert "(at description)" in reasons["9-res-jb latent 6"]
    assert "explanations/batch-0.jsonl:2" in reasons["9-res-jb latent 6"]
    assert any("(at index)" in r and f"{batch}:6" in r for r in reasons.values())
    assert any("not valid JSON" in r and f"{batch}:4" in r for r in reasons.values())
    for reason in reasons.values():
        assert "\n" not in reason and len(reason) <= 400
        assert str(MALFORMED) in reason  # the file is named
    for index in (2, 3, 4, 6):  # nothing of a refused latent is stored
        ref = NeuronRef("bad", 0, index)
        assert desk.store.get_file(ref, Kind.ACTIVATIONS.value) is None
        assert desk.explanations.of(ref) == []
    good = NeuronRef("bad", 0, 1)
    assert desk.store.get_file(good, Kind.ACTIVATIONS.value) is not None
    assert [e.explanation for e in desk.explanations.of(good)] == ["the word good"]


def test_reimport_is_idempotent(desk: Desk, tmp_path: Path) -> None:
    desk.import_neuronpedia([EXPORT], name="np")
    rows = desk.store.query("SELECT COUNT(*) FROM explanations")[0][0]
    files = desk.store.file_stats("np")
    again = desk.import_neuronpedia([published(tmp_path)], name="np")  # same rows, gzipped
    assert again.imported == 3
    count = desk.store.query("SELECT COUNT(*) FROM explanations")[0][0]
    assert count == rows == 4  # 2 explanations and 2 scores, not twice
    assert desk.store.file_stats("np") == files
    assert desk.dataset("np").dictionary.hook_points == ("9-res-jb", "10-res-jb")  # type: ignore[union-attr]
    folder = Path(desk.dataset("np").folder or "")
    assert (folder / "collated-activations/0/0.json").is_file()
    assert (folder / "related-tokens/weight-based/1/3.json").is_file()


def test_batches_imported_one_by_one_make_the_same_dataset(desk: Desk) -> None:
    source = EXPORT / "gpt2-small/9-res-jb"
    desk.import_neuronpedia([source / "explanations/batch-0.jsonl"], name="np")
    desk.import_neuronpedia([source / "activations/batch-0.jsonl"], name="np")
    desk.import_neuronpedia([source / "features/batch-0.jsonl"], name="np")
    ref = NeuronRef("np", 0, 0)
    assert desk.dataset("np").n_neurons == 24576  # source.jsonl is read beside the batches
    assert len(desk.explanations.of(ref)) == 3  # later batches kept the explanation and scores
    assert desk.store.get_file(ref, Kind.ACTIVATIONS.value) is not None
    assert desk.store.get_file(ref, Kind.TOKENS_BY_WEIGHT.value) is not None


def test_a_latent_split_over_two_activation_batches_is_merged(desk: Desk, tmp_path: Path) -> None:
    root = published(tmp_path)
    extra = (
        '{"modelId": "gpt2-small", "layer": "9-res-jb", "index": "0", "tokens": [" Lyon"], '
        '"values": [20.0], "maxValue": 20.0, "maxValueTokenIndex": 0}\n'
    )
    batch = root / "gpt2-small/9-res-jb/activations/batch-1.jsonl.gz"
    batch.write_bytes(gzip.compress(extra.encode()))
    report = desk.import_neuronpedia([root], name="np")
    assert report.imported == 3 and report.refused == []
    record = asyncio.run(desk.record(NeuronRef("np", 0, 0)))
    assert [max(r.activations) for r in record.most_positive_activation_records] == [
        31.25,
        20.0,
        12.5,
    ]
    assert len(desk.explanations.of(NeuronRef("np", 0, 0))) == 3  # not lost by the second part


def test_new_sources_are_appended_never_renumbered(desk: Desk) -> None:
    desk.import_neuronpedia([EXPORT / "gpt2-small/10-res-jb"], name="np")
    assert desk.dataset("np").dictionary.hook_points == ("10-res-jb",)  # type: ignore[union-attr]
    desk.import_neuronpedia([EXPORT], name="np")
    dataset = desk.dataset("np")
    assert dataset.dictionary is not None
    assert dataset.dictionary.hook_points == ("10-res-jb", "9-res-jb")
    record = asyncio.run(desk.record(NeuronRef("np", 0, 3)))
    assert record.most_positive_activation_records[0].tokens == [" über", " alles"]
    record = asyncio.run(desk.record(NeuronRef("np", 1, 0)))
    assert max(record.most_positive_activation_records[0].activations) == 31.25


def test_names_that_clash_or_escape_are_refused(desk: Desk) -> None:
    with pytest.raises(UnknownDataset):
        desk.import_neuronpedia([EXPORT], name="gpt2-xl")
    desk.import_delphi(FIXTURES / "delphi" / "smollm2-run", name="delphi-run")
    with pytest.raises(UnknownDataset, match="not a Neuronpedia import"):
        desk.import_neuronpedia([EXPORT], name="delphi-run")
    with pytest.raises(ValueError, match="not a dataset name"):
        desk.import_neuronpedia([EXPORT], name="../escape")
    with pytest.raises(UnknownDataset, match="not a Neuronpedia import"):
        desk.import_neuronpedia([EXPORT], name="delphi-run", model="gpt2-small")


def test_a_truncated_batch_refuses_the_import_and_stores_nothing(
    desk: Desk, tmp_path: Path
) -> None:
    root = published(tmp_path)
    batch = root / "gpt2-small/9-res-jb/activations/batch-0.jsonl.gz"
    batch.write_bytes(batch.read_bytes()[:-40])
    with pytest.raises(CodecError, match=r"batch-0\.jsonl\.gz: cannot be read whole"):
        desk.import_neuronpedia([root], name="np")
    assert desk.store.file_stats("np") == []
    assert "np" not in [d.name for d in desk.registry.all()]


def test_rows_of_another_model_are_refused(desk: Desk) -> None:
    report = desk.import_neuronpedia([EXPORT], name="np", model="gemma-2-2b")
    assert report.imported == 0
    assert all("is not the import's model 'gemma-2-2b'" in r.reason for r in report.refused)
    assert "np" not in [d.name for d in desk.registry.all()]


def test_a_folder_without_an_export_is_refused(desk: Desk, tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="no Neuronpedia export here"):
        desk.import_neuronpedia([tmp_path], name="np")
