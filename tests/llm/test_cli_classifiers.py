"""Issue 14.4: detection and fuzzing through the CLI, the fake server and the real store."""

from __future__ import annotations

import json
import re

import pytest

from neuron_desk.core import codec
from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind
from neuron_desk.data.store import Store
from neuron_desk.method.classifiers import ClassifierSettings
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.llm.test_cli_llm import NEURON, run_cli
from tests.synthetic import neuron_record

pytestmark = pytest.mark.integration

REF = NeuronRef("gpt2-small", 3, 7)


def quiet_random_record() -> NeuronRecord:
    """The synthetic "e" neuron whose random records have no "e": they do not activate."""
    record = neuron_record()
    for r in record.random_sample:
        r.tokens = [t.replace("e", "o") for t in r.tokens]
        r.activations = [-0.01] * len(r.tokens)
    return record


@pytest.fixture
def stored(isolated_environment: object) -> NeuronRecord:
    record = quiet_random_record()
    store = Store.open(Paths.from_env().store)
    store.put_file(REF, Kind.ACTIVATIONS.value, codec.dumps(record), "import")
    store.close()
    return record


def perfect_judge(system: str, excerpt: str) -> bool:
    """Knows the neuron: an "e" activates it; fuzzing marks are right when all hold an "e"."""
    if "marked" in system:
        marked = re.findall(r"<<(.*?)>>", excerpt)
        return bool(marked) and all("e" in m for m in marked)
    return "e" in excerpt


@pytest.mark.parametrize("scorer", ["detection", "fuzzing"])
def test_second_opinion_scorers_end_to_end(
    stored: NeuronRecord, scorer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeOpenAI(judge=perfect_judge)
    expected = ClassifierSettings().requests(stored, scorer)
    with FakeServer(fake) as server:
        base = [*NEURON, "--explanation", "the letter e", "--base-url", server.base_url]
        code, out, err = run_cli(capsys, "score", *base, "--model", "m", "--scorer", scorer)
        assert code == 0, err
        assert f"estimate: {scorer}: {expected} requests" in err
        assert f"{scorer}: balanced accuracy 1.000" in out and "AUC 1.000" in out
        assert len(fake.requests) == expected
        code, out, err = run_cli(
            capsys, "score", *base, "--scorer", scorer, "--model", "m", "--json"
        )
    assert code == 0, err
    data = json.loads(out, parse_constant=lambda c: pytest.fail(c))
    assert data["scorer"] == scorer and data["balanced_accuracy"] == 1.0 and data["auc"] == 1.0
    assert data["auc_source"] == "logprobs" and data["n_answered"] == data["n_excerpts"]
    store = Store.open(Paths.from_env().store)
    rows = [r for r in Explanations(store).of(REF) if r.provenance.get("scorer") == scorer]
    store.close()
    assert len(rows) == 2 and rows[0].score is None
    assert rows[0].provenance["metrics"]["f1"] == 1.0
    assert rows[0].provenance["parameters"]["batch_size"] == 5
    assert len(rows[0].provenance["answers"]) == data["n_answered"]
    # Exports keep the results line to simulation scores; the second opinions go beside it.
    out_file = Paths.from_env().store.parent / "export.jsonl"
    code, _, err = run_cli(capsys, "export", *NEURON, "--offline", "-o", str(out_file))
    assert code == 0, err
    assert json.loads(out_file.read_text())["scored_explanations"] == []
    sidecar = json.loads(out_file.with_name(out_file.name + ".provenance.json").read_text())
    assert [entry["scorer"] for entry in sidecar] == [scorer, scorer]
    assert sidecar[0]["metrics"]["balanced_accuracy"] == 1.0


def test_a_random_judge_scores_near_chance(
    stored: NeuronRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer(FakeOpenAI(seed=5)) as server:
        code, out, err = run_cli(
            capsys, "score", *NEURON, "--explanation", "e", "--base-url", server.base_url,
            "--model", "m", "--scorer", "detection", "--json",
        )  # fmt: skip
    assert code == 0, err
    assert abs(json.loads(out)["balanced_accuracy"] - 0.5) < 0.25
