"""The README's staged-job recipe, command by command, with the fake engine standing in for
`vllm run-batch` / the OpenAI Batch API; then two machines' stores merged with `import --store`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.fake_openai import FakeOpenAI, FakeServer
from tests.llm.conftest import SECRET
from tests.synthetic import oracle

ROOT = Path(__file__).resolve().parents[2]


def neuron_desk(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NEURON_DESK_HOME": str(home), "OPENAI_API_KEY": SECRET}
    return subprocess.run(
        [sys.executable, "-m", "neuron_desk", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fake_engine(requests: Path, output: Path, base_url: str) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tests.fake_engine", "-i", str(requests), "-o", str(output)),
            *("--base-url", base_url, "--model", "fake-model"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def rows(home: Path) -> list[tuple[int, int, str, str]]:
    db = sqlite3.connect(home / "store.sqlite3")
    try:
        return db.execute(
            "SELECT layer, neuron, explanation, json_extract(provenance, '$.run') "
            "FROM explanations ORDER BY layer, neuron"
        ).fetchall()
    finally:
        db.close()


def test_the_readme_recipe_against_the_fake_engine(tmp_path: Path) -> None:
    fake = FakeOpenAI(neuron=oracle, explanation=" words with the letter e")
    with FakeServer(fake) as server:
        home = tmp_path / "a"
        batch = [
            "batch", "smollm2-135m", "--layers", "0-14", "--limit", "2",
            "--base-url", server.base_url, "--model", "fake-model", "--method", "chat",
            "--name", "job-a",
        ]  # fmt: skip
        requests = tmp_path / "requests"
        done = neuron_desk(home, *batch, "--export-requests", str(requests))
        assert done.returncode == 0, done.stderr[-2000:]
        assert "2 to explain" in done.stdout
        files = sorted(requests.glob("*.jsonl"))
        assert [f.name for f in files] == ["explain-0001.jsonl"]
        assert SECRET not in "".join(f.read_text() for f in requests.iterdir())
        fake_engine(files[0], tmp_path / "output-1.jsonl", server.base_url)
        done = neuron_desk(
            home, *batch, "--import-results", str(tmp_path / "output-1.jsonl"),
            "--export-requests", str(requests),
        )  # fmt: skip
        assert done.returncode == 0 and "2 to score" in done.stdout, done.stderr[-2000:]
        manifest = json.loads((requests / "manifest.json").read_text())
        assert manifest["score"]["neurons"] == 2 and manifest["spec"]["method"]
        fake_engine(requests / "score-0001.jsonl", tmp_path / "output-2.jsonl", server.base_url)
        done = neuron_desk(
            home, *batch, "--import-results", str(tmp_path / "output-2.jsonl"),
            "--export-requests", str(requests), "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout)["export"]
        assert report["done"] == 2 and report["requests"] == 0
        usage = neuron_desk(home, "llm-usage", "--run", "batch-job-a", "--json")
        assert json.loads(usage.stdout)[0]["batch_requests"] > 2
        other = tmp_path / "b"  # the other machine's share, run online
        online = [*batch[:3], "15-29", *batch[4:-1], "job-b"]
        assert neuron_desk(other, *online).returncode == 0
        homes = [home, other]
        merged = tmp_path / "merged"
        for home in homes:
            done = neuron_desk(merged, "import", "--store", str(home / "store.sqlite3"))
            assert done.returncode == 0 and "imported 2 results" in done.stdout, done.stderr
        assert rows(merged) == sorted(rows(homes[0]) + rows(homes[1]))
