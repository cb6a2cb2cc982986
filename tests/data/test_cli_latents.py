"""The command line on a dictionary's latents: named latents in `datasets` and `show`, and
explain, every scorer, batch, search and export working on them as on neurons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.cli import main
from neuron_desk.core import codec
from neuron_desk.core.model import NeuronConnections, RelatedNeurons
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import ALL_KINDS, Dataset, Dictionary, Kind, Registry
from neuron_desk.data.store import Store
from tests.data.mirror import write_public_layout
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import oracle

RELATED = RelatedNeurons(
    c_fc=None,
    c_proj=NeuronConnections(
        top_positive_neurons=["0_1", "0_2", "0_1"],
        top_negative_neurons=["1_5"],
        top_positive_weights=[0.5, 0.4, 0.3],
        top_negative_weights=[-0.3],
    ),
)


def sae_dataset(folder: Path) -> Dataset:
    """A dictionary's latents in the public layout: records, explanations, tokens, related."""
    write_public_layout(folder, [(0, n) for n in range(6)] + [(1, 0), (1, 1)])
    related = folder / "related-neurons/weight-based/0/0.json"
    related.parent.mkdir(parents=True, exist_ok=True)
    related.write_text(codec.dumps(RELATED))
    return Dataset(
        name="toy-sae",
        title="Toy SAE",
        model="synthetic",
        n_layers=2,
        n_neurons=16,
        kinds=tuple(k for k in ALL_KINDS if k is not Kind.TOKENS_BY_WEIGHT),
        tokenizer="gpt2",
        folder=str(folder),
        dictionary=Dictionary(
            kind="sae",
            architecture="topk",
            d_in=8,
            d_sae=16,
            hook_points=("model.layers.3", "model.layers.9"),
            k=4,
        ),
    )


@pytest.fixture
def home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path / "home"))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NEURON_DESK_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    store = Store.open(Paths.from_env().store)
    Registry(store).add(sae_dataset(tmp_path / "sae"))
    store.close()
    yield tmp_path / "home"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_names_latents_and_runs_every_scorer_batch_and_export_on_them(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = cli(capsys, "datasets")
    assert code == 0 and any("toy-sae" in line and "latents" in line for line in out.splitlines())
    code, out, err = cli(capsys, "show", "toy-sae", "1", "0")
    assert code == 0, err
    assert out.splitlines()[0] == "toy-sae SAE at model.layers.9 latent 0"
    code, out, _ = cli(capsys, "show", "toy-sae", "1", "0", "--json")
    shown = json.loads(out)
    assert shown["unit"] == "latent" and shown["layer_label"] == "SAE at model.layers.9"
    code, out, err = cli(capsys, "show", "toy-sae", "0", "99")
    assert code != 0 and "no latent 99" in err

    fake = FakeOpenAI(neuron=oracle, explanation=" words with the letter e")
    with FakeServer(fake) as server:
        endpoint = ["--base-url", server.base_url, "--model", "m"]
        code, out, err = cli(capsys, "explain", "toy-sae", "0", "1", *endpoint, "--json")
        assert code == 0, err
        for scorer in ("simulation", "detection", "fuzzing"):
            code, out, err = cli(
                capsys, "score", "toy-sae", "0", "2", "--explanation", "the letter e",
                *endpoint, "--scorer", scorer, "--json",
            )  # fmt: skip
            assert code == 0, (scorer, err)
        code, out, err = cli(
            capsys, "batch", "toy-sae", "--layers", "1", "--neurons", "0,1", *endpoint, "--json"
        )
        assert code == 0, err
        assert json.loads(out)["explained"] == 2
        code, out, err = cli(
            capsys, "batch", "toy-sae", "--layers", "1", "--neurons", "0,1", *endpoint
        )  # the same batch again: resumed, and its summary speaks of latents
        assert code == 0, err
        assert ": 2/2 latents done (2 before this run, 0 now)" in out
        assert "neuron" not in out
        staged = tmp_path / "staged"
        code, out, err = cli(
            capsys, "batch", "toy-sae", "--layers", "0", "--neurons", "3,4", *endpoint,
            "--export-requests", str(staged),
        )  # fmt: skip
        assert code == 0, err
        assert ": 0/2 latents done (0 finished from cached responses now)" in out
        assert "neuron" not in out
    store = Store.open(Paths.from_env().store)
    try:
        rows = Explanations(store).of(NeuronRef("toy-sae", 0, 2))
        scorers = sorted(
            str(r.provenance.get("scorer", "simulation")) for r in rows if r.source == "user"
        )
        assert scorers == ["detection", "fuzzing", "simulation"]
        assert {r.ref for r in Explanations(store).best_own("toy-sae")} >= {
            NeuronRef("toy-sae", 0, 1), NeuronRef("toy-sae", 1, 0), NeuronRef("toy-sae", 1, 1),
        }  # fmt: skip
    finally:
        store.close()
    code, out, _ = cli(capsys, "search", "letter", "--dataset", "toy-sae")
    assert code == 0 and "toy-sae" in out
    target = tmp_path / "latents.jsonl"
    code, out, err = cli(capsys, "export", "toy-sae", "0", "1", "--output", str(target))
    assert code == 0, err
    assert "words with the letter e" in target.read_text()
