"""Issue 14.5: the original's three demo notebooks run with only their imports changed.

Their cells (tests/method/notebooks/, taken from the seed unchanged) run against the fake
OpenAI-compatible server on 127.0.0.1 (the default profile's endpoint, from the environment);
`load_neuron` reads GPT-2 XL 9/6236 through the store, where the test files it (no network).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from neuron_desk.core import codec
from neuron_desk.core.model import NeuronId, TokenLookupTableSummaryOfNeuron
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.store import Store
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.llm.conftest import isolated_environment
from tests.synthetic import neuron_record, oracle

__all__ = ["isolated_environment"]

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).parent / "notebooks"
_IMPORT = re.compile(r"^from neuron_explainer(\.\w+)* import ", re.M)


def ported_cells(name: str) -> list[str]:
    """The notebook's code cells with only their imports changed (and IPython magics left out)."""
    notebook = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    cells = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = "\n".join(line for line in source.split("\n") if not line.startswith("%"))
        cells.append(_IMPORT.sub("from neuron_desk.method import ", source))
    return cells


async def run_notebook(name: str) -> str:
    """Run the cells in one namespace, top-level await allowed, as Jupyter does; the output."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for index, source in enumerate(ported_cells(name)):
            code = compile(source, f"{name}[{index}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if asyncio.iscoroutine(result):
                await result
    return out.getvalue()


@pytest.fixture
def endpoint(isolated_environment: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """GPT-2 XL 9/6236 in the user's store; the default endpoint is the fake server."""
    record = neuron_record()
    record.neuron_id = NeuronId(9, 6236)
    lookup = TokenLookupTableSummaryOfNeuron(
        tokens=[" e", " eye", " seed", " tree"], average_activations=[6.0, 5.0, 4.0, 3.0]
    )
    store = Store.open(Paths.from_env().store)
    ref = NeuronRef("gpt2-xl", 9, 6236)
    store.put_file(ref, "activations", codec.dumps(record), "import")
    store.put_file(ref, "tokens-by-activation", codec.dumps(lookup), "import")
    store.close()
    fake = FakeOpenAI(neuron=oracle, explanation=" words with the letter e")
    with FakeServer(fake) as server:
        monkeypatch.setenv("NEURON_DESK_BASE_URL", server.base_url)
        yield fake


def test_the_imports_are_the_only_change() -> None:
    for name in ("explain_puzzles", "generate_and_score_explanation"):
        original = "".join(
            "".join(c["source"])
            for c in json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]
        )
        assert "from neuron_explainer." in original
        assert "neuron_explainer" not in "".join(ported_cells(name))


@pytest.mark.parametrize(
    "name", ["generate_and_score_explanation", "generate_and_score_token_look_up_table_explanation"]
)
def test_scoring_notebooks_run_end_to_end(endpoint: FakeOpenAI, name: str) -> None:
    output = asyncio.run(run_notebook(name))
    assert "explanation=' words with the letter e'" in output
    score = float(re.search(r"score=(-?\d\.\d\d)", output).group(1))  # type: ignore[union-attr]
    assert score > 0.9
    paths = [path for path, _ in endpoint.requests]
    assert paths[0].endswith("/chat/completions")  # the explainer (harmony_v4)
    assert all(p.endswith("/completions") for p in paths[1:]) and len(paths) == 11


def test_puzzles_notebook_runs_end_to_end(endpoint: FakeOpenAI) -> None:
    from neuron_desk.method import PUZZLES_BY_NAME

    output = asyncio.run(run_notebook("explain_puzzles"))
    assert output.count("puzzle_name=") == len(PUZZLES_BY_NAME) == 19
    assert output.count("model_generated_explanation=' words with the letter e'") == 19
    assert "puzzle_answer='words related to colors and nothing else'" in output


def test_loaders_have_the_original_signatures_and_read_a_local_mirror(tmp_path: Path) -> None:
    import inspect

    from neuron_desk.method import load_neuron, load_neuron_async

    assert list(inspect.signature(load_neuron).parameters) == [
        "layer_index",
        "neuron_index",
        "dataset_path",
    ]
    assert inspect.iscoroutinefunction(load_neuron_async)
    folder = tmp_path / "collated-activations" / "3"
    folder.mkdir(parents=True)
    record = neuron_record()
    (folder / "7.json").write_text(codec.dumps(record))
    loaded = load_neuron(3, "7", str(tmp_path / "collated-activations"))
    assert loaded.most_positive_activation_records == record.most_positive_activation_records

    async def inside_a_loop() -> int:  # as in a notebook: the sync loader within a running loop
        return len(load_neuron(3, 7, str(tmp_path / "collated-activations")).random_sample)

    assert asyncio.run(inside_a_loop()) == len(record.random_sample)


def test_load_neuron_explanations_from_a_folder(tmp_path: Path) -> None:
    from neuron_desk.method import load_neuron_explanations

    folder = tmp_path / "explanations" / "0"
    folder.mkdir(parents=True)
    line = (
        '{"neuron_id": {"layer_index": 0, "neuron_index": 5}, "scored_explanations": '
        '[{"explanation": " vowels", "scored_simulation": {"scored_sequence_simulations": [], '
        '"ev_correlation_score": 0.5}}]}'
    )
    (folder / "5.jsonl").write_text(line + "\n")
    results = load_neuron_explanations(str(tmp_path / "explanations"), 0, 5)
    assert results is not None and results.scored_explanations[0].explanation == " vowels"
    assert load_neuron_explanations(str(tmp_path / "explanations"), 0, 6) is None
