"""delphi results folders imported as a latent dataset, then opened offline through the desk."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.core.errors import CodecError
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import with_second_opinions
from neuron_desk.data.registry import Kind
from neuron_desk.desk import Desk

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = FIXTURES / "delphi" / "smollm2-run"
MALFORMED = FIXTURES / "delphi-malformed" / "run"


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk.open(Paths.at(tmp_path / "home"), bundled=[], offline=True)
    yield d
    asyncio.run(d.aclose())
    d.close()


def test_import_then_open_a_latent_offline(desk: Desk) -> None:
    report = desk.import_delphi(RESULTS, name="smol")
    assert (report.imported, report.refused, report.explanations, report.scores) == (3, [], 3, 3)
    assert report.skipped == [
        f"{RESULTS}/scores/simulation: delphi's 'simulation' scores are not imported "
        "(only detection and fuzz)"
    ]
    dataset = desk.dataset("smol")
    assert dataset.model == "HuggingFaceTB/SmolLM2-135M"  # from run_config.json
    assert dataset.dictionary is not None
    assert dataset.dictionary.hook_points == ("layers.9", "layers.10")
    assert dataset.dictionary.architecture == "unknown"
    assert dataset.n_neurons == 132  # delphi does not say d_sae: the largest latent + 1

    ref = desk.ref("smol", 0, 131)
    data = asyncio.run(desk.neuron(ref))
    assert not isinstance(data.record, Exception) and data.record is not None
    record = data.record.value
    assert [max(r.activations) for r in record.most_positive_activation_records] == [9.0, 7.5, 3.0]
    assert record.most_positive_activation_records[2].tokens == [
        "<b>", "bold", "</b>", "\n", "\t", "café", " 🙂",
    ]  # fmt: skip
    # the excerpt both scorers showed is kept once; the others are the non-activating ones
    assert [r.tokens for r in record.random_sample] == [
        [" the", " cat", " sat"],
        [" Rome", " is", " old"],
        [" no", " answer"],
        [" London", " calling"],
    ]

    listed = with_second_opinions(desk.listed_explanations(data))
    assert len(listed) == 1
    (explanation,) = listed
    assert explanation.explanation.startswith('The token "Paris" and other <b>capital</b> cities')
    assert explanation.source == "imported from delphi"
    assert explanation.score is None and explanation.scored is None
    assert explanation.model == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    opinions = {o["scorer"]: o for o in explanation.opinions}
    assert set(opinions) == {"detection", "fuzzing"}
    # metrics as delphi's log/result_analysis.py computes them: 5 of 6 samples answered,
    # tp=2 fn=1 tn=1 fp=1; AUC over the 5 probabilities given
    detection = opinions["detection"]
    assert detection["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert detection["precision"] == pytest.approx(2 / 3)
    assert detection["recall"] == pytest.approx(2 / 3)
    assert detection["auc"] == pytest.approx(5 / 6)
    assert (detection["n_excerpts"], detection["n_answered"]) == (6, 5)
    assert opinions["fuzzing"]["balanced_accuracy"] == 1.0
    assert opinions["fuzzing"]["auc"] is None

    rows = desk.explanations.of(ref)
    scorers = sorted(str(r.provenance.get("scorer", "")) for r in rows)
    assert scorers == ["", "detection", "fuzzing"]
    fuzz = next(r for r in rows if r.provenance.get("scorer") == "fuzzing")
    assert fuzz.provenance["delphi_scorer"] == "fuzz"
    assert fuzz.provenance["file"] == f"{RESULTS}/scores/fuzz/layers.9_latent131.txt"
    assert all(r.score is None for r in rows)  # no row claims a simulation score

    export = asyncio.run(desk.export(ref))  # offline, from the store
    assert [e.explanation for e in export.results.scored_explanations] == [explanation.explanation]
    assert [o["scorer"] for o in export.provenance if "scorer" in o] == ["detection", "fuzzing"]


def test_a_latent_with_an_explanation_only(desk: Desk) -> None:
    desk.import_delphi(RESULTS, name="smol")
    ref = NeuronRef("smol", 1, 0)
    assert [e.explanation for e in desk.explanations.of(ref)] == ["German über and other umlauts"]
    assert desk.store.get_file(ref, Kind.ACTIVATIONS.value) is None  # no samples, no records


def test_unknown_fields_are_tolerated(desk: Desk) -> None:
    assert (
        "a_field_from_the_future"
        in (RESULTS / "scores/detection/layers.9_latent131.txt").read_text()
    )
    assert "cache_cfg" in (RESULTS / "run_config.json").read_text()
    assert desk.import_delphi(RESULTS, name="smol").refused == []


def test_malformed_files_refuse_their_latent_with_the_field_named(desk: Desk) -> None:
    report = desk.import_delphi(MALFORMED, name="bad")
    assert report.imported == 1
    reasons = {r.where: r.reason for r in report.refused}
    assert "expected str, got dict (at explanation)" in reasons["layers.9 latent 2"]
    assert "layers.9_latent2.txt" in reasons["layers.9 latent 2"]
    assert "2 str_tokens but 1 activations (at [0].activations)" in reasons["layers.9 latent 3"]
    assert "expected bool, got str (at activating)" in reasons["layers.9 latent 4"]
    assert any("oops.txt: not named <module>_latent<N>.txt" in r for r in reasons.values())
    for reason in reasons.values():
        assert "\n" not in reason and len(reason) <= 400
    for index in (2, 3, 4):  # latent 3's explanation was fine: nothing of it is stored anyway
        ref = NeuronRef("bad", 0, index)
        assert desk.explanations.of(ref) == []
        assert desk.store.get_file(ref, Kind.ACTIVATIONS.value) is None
    good = desk.explanations.of(NeuronRef("bad", 0, 1))
    assert sorted(str(r.provenance.get("scorer", "")) for r in good) == ["", "detection"]


def test_reimport_is_idempotent(desk: Desk) -> None:
    desk.import_delphi(RESULTS, name="smol")
    before = desk.store.query("SELECT explanation, provenance FROM explanations ORDER BY 1, 2")
    files = desk.store.file_stats("smol")
    desk.import_delphi(RESULTS, name="smol")
    after = desk.store.query("SELECT explanation, provenance FROM explanations ORDER BY 1, 2")
    assert after == before and len(after) == 6
    assert desk.store.file_stats("smol") == files


def test_a_changed_run_replaces_the_imported_rows(desk: Desk, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(RESULTS, copy)
    desk.import_delphi(copy, name="smol")
    (copy / "explanations/layers.9_latent7.txt").write_text('"a better explanation"')
    desk.import_delphi(copy, name="smol")
    texts = {r.explanation for r in desk.explanations.of(NeuronRef("smol", 0, 7))}
    assert texts == {"a better explanation"}


def test_the_model_can_be_named(desk: Desk) -> None:
    desk.import_delphi(RESULTS, name="smol", model="SmolLM2-135M")
    assert desk.dataset("smol").model == "SmolLM2-135M"


def test_a_folder_that_is_not_delphis_is_refused(desk: Desk, tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="not a delphi results folder"):
        desk.import_delphi(tmp_path, name="smol")
