"""`neuron-desk explain` and `score` against the fake server, with the neuron in the store."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_desk.cli import main
from neuron_desk.core import codec
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Kind
from neuron_desk.data.store import Store
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import neuron_record, oracle

pytestmark = pytest.mark.integration

NEURON = ["gpt2-small", "3", "7"]


@pytest.fixture
def stored_neuron(isolated_environment: object) -> None:
    """The synthetic neuron filed as gpt2-small 3/7 in the user's store (no network needed)."""
    store = Store.open(Paths.from_env().store)
    store.put_file(NeuronRef("gpt2-small", 3, 7), Kind.ACTIVATIONS.value, codec.dumps(neuron_record()), "import"
    )
    store.close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(FakeOpenAI(neuron=oracle, explanation=" the letter e")) as s:
        yield s


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_score_json_then_cached(
    stored_neuron: None, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["score", *NEURON, "--explanation", "the letter e", "--base-url", server.base_url]
    code, out, err = run_cli(capsys, *args, "--model", "fake-model", "--json", "--offline")
    assert code == 0, err
    result = json.loads(out)
    for key in ("explanation", "score", "rsquared", "absolute_dev_explained", "method", "model"):
        assert key in result
    assert result["score"] > 0.9 and result["sequences"] == 10 and result["requests"] == 10
    assert result["method"] == "all_at_once_prompt_logprobs" and result["model"] == "fake-model"
    assert result["usage"]["prompt_tokens"] > 0
    sent = len(server.fake.requests)
    code, out, _ = run_cli(capsys, *args, "--model", "fake-model", "--json", "--offline")
    again = json.loads(out)
    assert again["requests"] == 0 and again["cached_requests"] == 10
    assert len(server.fake.requests) == sent
    code, out, _ = run_cli(capsys, "llm-usage", "--json")
    (row,) = json.loads(out)
    assert row["requests"] == 10 and row["cached_requests"] == 10  # the probe is not billed
    # Scored twice the same way: one stored result, the same id both times.
    assert again["stored_id"] == result["stored_id"]
    code, out, _ = run_cli(capsys, "show", *NEURON, "--json", "--offline")
    assert [e["explanation"] for e in json.loads(out)["explanations"]] == ["the letter e"]
    assert run_cli(capsys, "llm-usage", "--run", "nosuch")[0] == 1
    assert run_cli(capsys, "llm-usage", "--run", "nosuch", "--json")[0] == 1


def test_progress_on_a_terminal_only(
    stored_neuron: None,
    server: FakeServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["score", *NEURON, "--explanation", "vowels", "--base-url", server.base_url,
            "--model", "fake-model", "--method", "chat"]  # fmt: skip
    code, _, err = run_cli(capsys, *args, "--json")
    assert code == 0 and "requests" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run_cli(capsys, *args, "--regenerate", "--no-cache")
    assert code == 0 and "/10 requests" in err and "tokens" in err
    code, _, err = run_cli(capsys, *args, "--json", "--regenerate")
    assert code == 0 and "requests" not in err  # --json: quiet even on a terminal


def test_a_closed_pipe_ends_quietly(stored_neuron: None, tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "NEURON_DESK_HOME": os.environ["NEURON_DESK_HOME"]}
    command = f"{sys.executable} -m neuron_desk neurons gpt2-xl | head -n 2"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["0 0", "0 1"]
    assert done.stderr == ""  # no traceback, no "[Errno 32] Broken pipe"
    assert done.returncode == 141


def test_score_human_output_and_forced_method(
    stored_neuron: None, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "score", *NEURON, "--explanation", "the letter e", "--base-url",
        server.base_url, "--model", "fake-model", "--method", "chat",
    )  # fmt: skip
    assert code == 0, err
    assert "score 0.9" in out or "score 1.0" in out
    assert "chat (chosen by the user)" in out and "stored as explanation #" in out


def test_explain_samples_json(
    stored_neuron: None, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "explain", *NEURON, "--base-url", server.base_url, "--model", "fake-model",
        "--samples", "2", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert [e["explanation"] for e in result["explanations"]] == ["the letter e"] * 2
    assert all(e["score"] > 0.9 for e in result["explanations"])
    code, out, _ = run_cli(capsys, "show", *NEURON, "--json", "--offline")
    assert "the letter e" in out


def test_dry_run_sends_nothing(
    stored_neuron: None, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "explain", *NEURON, "--base-url", server.base_url, "--model", "fake-model",
        "--samples", "3", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "=== explanation prompt ===" in out and "Neuron" in out
    assert "nothing was sent" in out and "requests: 31" in out
    code, out, err = run_cli(
        capsys, "score", *NEURON, "--explanation", "e", "--base-url", server.base_url,
        "--model", "fake-model", "--method", "one-at-a-time", "--dry-run", "--json",
    )  # fmt: skip
    estimate = json.loads(out)
    assert estimate["requests"] == 640 and estimate["prompt_tokens"] > 0
    assert server.fake.requests == []


def test_budget_stop_and_bad_input(
    stored_neuron: None, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "score", *NEURON, "--explanation", "e", "--base-url", server.base_url,
        "--model", "fake-model", "--budget-tokens", "2000",
    )  # fmt: skip
    assert code == 1 and "stopped: the run's budget of 2,000 tokens is reached" in err
    code, _, err = run_cli(
        capsys, "score", *NEURON, "--explanation", "e", "--base-url", server.base_url
    )
    assert code == 2 and "no model" in err
    code, _, err = run_cli(capsys, "score", *NEURON, "--explanation", " ", "--model", "m")
    assert code == 2


def test_the_profile_budget_is_honoured(
    stored_neuron: None,
    server: FakeServer,
    isolated_environment: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = {"name": "capped", "base_url": server.base_url, "explainer_model": "fake-model",
               "simulator_model": "fake-model", "budget_tokens": 2000}  # fmt: skip
    isolated_environment.mkdir(parents=True, exist_ok=True)
    (isolated_environment / "llm_profiles.json").write_text(json.dumps({"profiles": [profile]}))
    code, _, err = run_cli(
        capsys, "score", *NEURON, "--explanation", "e", "--profile", "capped"
    )
    assert code == 1 and "stopped: the run's budget of 2,000 tokens is reached" in err
    code, out, err = run_cli(
        capsys, "score", *NEURON, "--explanation", "e", "--profile", "capped",
        "--budget-tokens", "100000000", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["requests"] > 0


def test_no_logprobs_endpoint_explains_and_scores_with_written_digits(
    stored_neuron: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer(FakeOpenAI(logprobs=False, explanation=" vowels")) as server:
        code, out, err = run_cli(
            capsys, "explain", *NEURON, "--base-url", server.base_url, "--model", "m", "--json",
        )  # fmt: skip
    assert code == 0, err
    (shown,) = json.loads(out)["explanations"]
    assert shown["explanation"] == "vowels"
    assert shown["method"] == "all_at_once_chat_generation_written_digits"
    assert shown["value_sources"]["written_digit"] > 0
    assert threading.active_count() >= 1
