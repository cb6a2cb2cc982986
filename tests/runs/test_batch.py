"""Batch runs over the bundled sample against the fake OpenAI-compatible server: a full run,
and a run killed half-way then resumed, which must end with the same results."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import oracle

ROOT = Path(__file__).resolve().parents[2]
N = 50


def batch_command(base_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "neuron_desk",
        "batch",
        "smollm2-135m",
        "--layers",
        "0-4",
        "--limit",
        str(N),
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--method",
        "chat",
        "--concurrency",
        "4",
        "--name",
        "test",
        "--json",
    ]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "NEURON_DESK_HOME": str(home), "OPENAI_API_KEY": ""}


def results(home: Path) -> list[tuple[int, int, str, float | None]]:
    db = sqlite3.connect(home / "store.sqlite3")
    try:
        rows = db.execute(
            "SELECT layer, neuron, explanation, score FROM explanations "
            "WHERE json_extract(provenance, '$.run') = 'batch-test' ORDER BY layer, neuron"
        ).fetchall()
    finally:
        db.close()
    return [(a, b, c, None if d is None else round(d, 6)) for a, b, c, d in rows]


def count(home: Path) -> int:
    path = home / "store.sqlite3"
    if not path.exists():
        return 0
    try:
        return len(results(home))
    except sqlite3.OperationalError:
        return 0


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    with FakeServer(FakeOpenAI(neuron=oracle, explanation=" words with the letter e")) as s:
        yield s


def test_batch_completes_and_resumes_to_the_same_result(server: FakeServer, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    done = subprocess.run(
        batch_command(server.base_url),
        env=env_for(straight),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["done"] == N and summary["failed"] == 0 and summary["explained"] == N
    assert summary["scores"]["median"] is not None and summary["requests"] > N
    expected = results(straight)
    assert len(expected) == N

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        batch_command(server.base_url),
        env=env_for(resumed),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 300
    while count(resumed) < N // 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    partial = count(resumed)
    assert 0 < partial < N

    again = subprocess.run(
        batch_command(server.base_url),
        env=env_for(resumed),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["done_before"] == partial and summary["done"] == N
    assert results(resumed) == expected
    db = sqlite3.connect(resumed / "store.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_budget_stops_a_batch_cleanly(server: FakeServer, tmp_path: Path) -> None:
    home = tmp_path / "budget"
    command = [*batch_command(server.base_url), "--budget-tokens", "150000"]
    run = subprocess.run(
        command, env=env_for(home), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 1
    summary = json.loads(run.stdout)
    assert summary["stopped"] and 0 < summary["done"] < N
    assert summary["prompt_tokens"] + summary["completion_tokens"] <= 150000


def test_batch_summarises_second_opinion_scorers(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14.4: a batch runs detection on each neuron's best explanation and summarises it."""
    command = batch_command(server.base_url)
    command[command.index("--limit") + 1] = "3"
    command[command.index("--name") + 1] = "opinions"
    done = subprocess.run(
        [*command, "--scorers", "detection"],
        env=env_for(tmp_path / "home"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["done"] == 3 and summary["failed"] == 0
    detection = summary["second_opinions"]["detection"]
    assert detection["neurons"] == 3 and detection["undefined"] < 3
    assert 0.0 <= detection["min"] <= detection["max"] <= 1.0
    assert summary["methods"] == {"all_at_once_chat_generation": 3}
