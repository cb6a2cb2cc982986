"""Staged batches: request files for an engine that batches, its output read back, and the
results equal to an online batch of the same spec (200 neurons of the bundled sample, the fake
engine answering through the fake server); file splitting, output-line errors, merging stores."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import MethodError
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from neuron_desk.llm.capabilities import parse_method
from neuron_desk.llm.client import NO_RETRY, OpenAICompatibleClient
from neuron_desk.llm.ledger import (
    Price,
    PriceTable,
    UsageLedger,
    record_usages,
    usage_of,
    usage_totals,
)
from neuron_desk.runs.batch import BatchSpec
from neuron_desk.runs.estimate import (
    RefusingBackend,
    record_explaining,
    record_scoring,
    scoring_records,
)
from neuron_desk.runs.options import RunOptions
from neuron_desk.runs.run import NeuronRun
from neuron_desk.runs.staged import FileLimits, RequestWriter, import_results
from tests.fake_engine import FakeEngine
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.llm.conftest import SECRET
from tests.synthetic import neuron_record, oracle

DATASET = "smollm2-135m"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(FakeOpenAI(neuron=oracle, explanation=" words with the letter e")) as s:
        yield s


def open_desk(home: Path) -> Desk:
    return Desk.open(Paths.at(home))


def spec_and_options(desk: Desk, base_url: str, n: int, *, method: str | None = "chat"):  # type: ignore[no-untyped-def]
    profile = desk.profile(None, base_url)
    options = RunOptions.for_profile(profile, model="fake-model", method=method)
    options.n_examples_per_split = 1  # 1 record to explain from, 2 to score on: a quick test
    neurons = tuple(desk.available_neurons(DATASET)[:n])
    return profile, options, BatchSpec(DATASET, neurons, profile.name, 1, "staged-test")


def answer_in_process(fake: FakeOpenAI):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/chat/completions")
        return httpx.Response(200, json=fake.chat(json.loads(request.content)))

    return handler


def results(desk: Desk, batch_id: str) -> list[tuple[int, int, str, float | None]]:
    rows = desk.explanations.of_run(batch_id)
    out = [
        (r.ref.layer, r.ref.index, r.explanation, None if r.score is None else round(r.score, 9))
        for r in rows
    ]
    return sorted(out, key=lambda row: (row[0], row[1]))


def test_staged_round_trip_equals_the_online_batch(server: FakeServer, tmp_path: Path) -> None:
    n = 200
    online = open_desk(tmp_path / "online")
    profile, options, spec = spec_and_options(online, server.base_url, n)
    # The online batch: the real client and run, the fake answering in-process (no sockets, so
    # the test stays quick); the staged one goes through the fake server over HTTP.
    client = OpenAICompatibleClient(
        server.base_url, transport=httpx.MockTransport(answer_in_process(server.fake))
    )
    run = NeuronRun(client, options, store=online.store, profile=profile.name, run_id=spec.batch_id)
    summary = asyncio.run(online.batch(spec, run, concurrency=8))
    assert summary.done == n and summary.failed == 0
    expected = results(online, spec.batch_id)
    online.close()

    desk = open_desk(tmp_path / "staged")
    profile, options, spec = spec_and_options(desk, server.base_url, n)
    engine = FakeEngine(server.base_url)
    requests_dir = tmp_path / "requests"
    fake = server.fake
    stages: list[tuple[int, int, int, int]] = []
    faults: dict[str, set[str]] = {}
    for round_number in range(6):
        run = desk.staged_run(profile, options, run_id=spec.batch_id)
        sent_before = len(fake.requests)
        report, _ = asyncio.run(desk.export_requests(spec, run, requests_dir))
        assert len(fake.requests) == sent_before, "an export pass sent a request"
        stages.append(
            (report.explain.neurons, report.score.neurons, report.finished_now, report.requests)
        )
        manifest = json.loads((requests_dir / "manifest.json").read_text())
        assert manifest["requests"] == report.requests
        assert [f["name"] for f in manifest["files"]] == [f.name for f in report.files]
        if not report.files:
            break
        outputs = []
        expired = failed = 0
        for index, file in enumerate(report.files):
            lines = (requests_dir / file.name).read_text().splitlines()
            keys = [json.loads(line)["custom_id"] for line in lines]
            assert len(set(keys)) == len(keys)
            if file.stage == "score" and not faults:  # one expired line, one failed line
                faults = {"expire": {keys[0]}, "fail": {keys[-1]}}
                run_faults = faults
            else:
                run_faults = {}
            output = tmp_path / f"out-{round_number}-{index}.jsonl"
            engine.answer(requests_dir / file.name, output, **run_faults)
            outputs.append(output)
            expired += len(run_faults.get("expire", ()))
            failed += len(run_faults.get("fail", ()))
        imported = desk.import_results(outputs, profile, run_id=spec.batch_id)
        assert (imported.failed, imported.expired) == (failed, expired)
    explain, score, finished, _ = stages[0]
    assert (explain, score, finished) == (n, 0, 0)
    assert stages[1][:2] == (0, n) and stages[1][2] == 0
    assert stages[2][3] == 2  # only the expired and the failed request are exported again
    assert stages[2][2] >= n - 2 and stages[-1] == (0, 0, stages[-1][2], 0)
    assert sum(stage[2] for stage in stages) == n
    assert results(desk, spec.batch_id) == expected
    provenance = desk.explanations.of_run(spec.batch_id)[0].provenance
    assert provenance["run"] == spec.batch_id and provenance["method"] == "all_at_once_chat_generation"
    desk.close()


def test_request_lines_are_the_bytes_the_client_sends(tmp_path: Path) -> None:
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200, json={"choices": []})

    body = {"model": "m", "messages": [{"role": "user", "content": "naïve\ttab \u2028 \"q\""}]}
    client = OpenAICompatibleClient(
        "http://engine.invalid/v1", SECRET, transport=httpx.MockTransport(handler), retry=NO_RETRY
    )

    async def send() -> None:
        await client.chat_completions(body)
        await client.aclose()

    asyncio.run(send())
    writer = RequestWriter(tmp_path, FileLimits(), PriceTable())
    writer.add("score", "/chat/completions", body, "http://engine.invalid/v1")
    writer.close()
    line = (tmp_path / "score-0001.jsonl").read_bytes()
    assert line.rstrip(b"\n").endswith(b',"body":' + sent[0] + b"}")
    assert SECRET.encode() not in line


def test_files_split_at_the_limits_with_one_model_per_file(tmp_path: Path) -> None:
    prices = PriceTable()
    prices.set("a", Price(2.0, 8.0))
    writer = RequestWriter(tmp_path, FileLimits(max_requests=3, max_bytes=600), prices)
    bodies = [{"model": "a", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(7)]
    for body in bodies:
        assert writer.add("explain", "/chat/completions", body, "e")
    assert not writer.add("explain", "/chat/completions", bodies[-1], "e")  # once per file
    writer.add("explain", "/chat/completions", {"model": "b", "messages": []}, "e")
    writer.add("explain", "/chat/completions", {"model": "a", "messages": [], "x": "y" * 500}, "e")
    writer.close()
    files = writer.files
    assert [f.requests for f in files if f.model == "a"] == [3, 3, 1, 1]
    assert [f.model for f in files].count("b") == 1 and files[-1].bytes > 400  # a long line alone
    for f in files:
        text = (tmp_path / f.name).read_bytes()
        assert len(text) == f.bytes and text.count(b"\n") == f.requests
        assert (f.cost_usd is None) == (f.model == "b")
        assert all(json.loads(line)["url"] == "/v1/chat/completions" for line in text.splitlines())


def test_import_reports_bad_failed_and_expired_lines(store: Store, tmp_path: Path) -> None:
    key = "a" * 64
    ok = {"choices": [{"message": {"content": "x"}}], "model": "m", "usage": {
        "prompt_tokens": 2000, "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 1500}}}
    lines = [
        {"id": "1", "custom_id": key, "response": {"status_code": 200, "request_id": "r",
                                                   "body": ok}, "error": None},
        {"id": "2", "custom_id": "b" * 64, "response": None,
         "error": {"code": "batch_expired", "message": "expired"}},
        {"id": "3", "custom_id": "c" * 64, "response": {"status_code": 400, "request_id": "r",
                                                        "body": {"error": {"message": "bad"}}},
         "error": None},
        {"id": "4", "custom_id": "d" * 64,  # vLLM: the error as a string
         "response": {"status_code": 400, "request_id": "r", "body": None}, "error": "oops"},
        {"id": "5", "custom_id": "request-1", "response": None, "error": None},
    ]
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    prices = PriceTable()
    prices.set("m", Price(2.0, 8.0, cached_prompt=1.0))
    report = import_results([path], store, "e", run_id="batch-x", prices=prices)
    assert (report.lines, report.imported, report.expired, report.failed) == (6, 1, 1, 4)
    assert "bad" in report.errors[1] and "oops" in report.errors[2]
    assert report.usage.cached_prompt_tokens == 1500
    # batch rates: half of the online ones; cached tokens at min(cached, batch prompt)
    assert report.cost_usd == pytest.approx((500 * 1.0 + 1500 * 1.0 + 10 * 4.0) / 1e6)
    again = import_results([path], store, "e", run_id="batch-x", prices=prices)
    assert again.imported == 0 and again.already_cached == 1
    rows = store.query("SELECT batch, cached_prompt_tokens FROM usage WHERE run='batch-x'")
    assert rows == [(1, 1500), (1, 1500)]


def test_a_staged_batch_cannot_probe(server: FakeServer, tmp_path: Path) -> None:
    desk = open_desk(tmp_path / "home")
    profile, options, spec = spec_and_options(desk, server.base_url, 2, method=None)
    run = desk.staged_run(profile, options, run_id=spec.batch_id)
    with pytest.raises(MethodError, match="cannot probe"):
        asyncio.run(desk.export_requests(spec, run, tmp_path / "requests"))
    assert server.fake.requests == []
    desk.close()


def test_split_job_merged_by_importing_the_stores(server: FakeServer, tmp_path: Path) -> None:
    parts = []
    for index in range(2):
        desk = open_desk(tmp_path / f"machine{index}")
        profile, options, spec = spec_and_options(desk, server.base_url, 8)
        neurons = spec.neurons[index * 4 : (index + 1) * 4]
        part = BatchSpec(DATASET, neurons, profile.name, 1, f"part{index}")
        asyncio.run(desk.batch(part, desk.run(profile, options, run_id=part.batch_id)))
        parts.append((results(desk, part.batch_id), part.batch_id))
        desk.close()
    merged = open_desk(tmp_path / "merged")
    for index in range(2):
        imported = merged.import_store(tmp_path / f"machine{index}" / "store.sqlite3")
        assert imported.results == 4 and imported.responses > 4
    again = merged.import_store(tmp_path / "machine0" / "store.sqlite3")
    assert again.results == 0 and again.responses == 0
    for expected, batch_id in parts:
        assert results(merged, batch_id) == expected
    merged_part = {r.ref for r in merged.explanations.of_run("batch-part1")}
    assert merged_part == {NeuronRef(DATASET, row[0], row[1]) for row in parts[1][0]}
    merged.close()


def test_migration_2_keeps_old_usage_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    from neuron_desk.data import store as store_module

    db = sqlite3.connect(path)
    for statement in store_module._statements(store_module._MIGRATIONS[1]):
        db.execute(statement)
    db.execute(
        "INSERT INTO usage (run, endpoint, model, prompt_tokens, completion_tokens, cached, "
        "created_at) VALUES ('r', 'e', 'm', 10, 2, 0, 0)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store.open(path)
    assert store.query("SELECT cached_prompt_tokens, batch FROM usage") == [(0, 0)]
    assert store.query("PRAGMA user_version") == [(store_module.SCHEMA_VERSION,)]
    store.close()


def test_cached_prompt_tokens_and_batch_requests_are_priced_apart(store: Store) -> None:
    prices = PriceTable()
    prices.set("m", Price(2.0, 8.0, cached_prompt=0.5, batch_prompt=1.0, batch_completion=3.0))
    ledger = UsageLedger(run="r", prices=prices, store=store)
    reported = {"prompt_tokens": 1000, "completion_tokens": 100}
    usage = usage_of(
        {"model": "m"},
        {"usage": reported | {"prompt_tokens_details": {"cached_tokens": 800}}},
    )
    assert usage.cached_prompt_tokens == 800
    ledger.record("e", "m", usage, cached=False)
    online = (200 * 2.0 + 800 * 0.5 + 100 * 8.0) / 1e6
    assert ledger.cost == pytest.approx(online)
    record_usages(store, "r", "e", [("m", usage)], batch=True)
    [total] = usage_totals(store, "r")
    assert (total.requests, total.batch_requests, total.cached_prompt_tokens) == (2, 1, 1600)
    staged = (200 * 1.0 + 800 * 0.5 + 100 * 3.0) / 1e6
    assert total.cost(prices) == pytest.approx(online + staged)
    assert Price.from_json(prices.get("m").to_json()) == prices.get("m")  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["chat", "one-at-a-time", "prompt-logprobs"])
def test_the_shared_part_of_every_prompt_comes_first(method: str) -> None:
    """Prefix caches need the system message and few-shot examples first, byte-identical."""
    options = RunOptions(explainer_model="m", simulator_model="m", method=parse_method(method))
    run = NeuronRun(RefusingBackend("e"), options)
    settings = options.settings()
    first, second = neuron_record(seed=1), neuron_record(seed=2)

    async def bodies() -> tuple[list[JSONDict], list[JSONDict]]:
        explain = [
            body
            for record in (first, second)
            for _, body in (await record_explaining(record, run.explainer, settings))[0]
        ]
        choice = run.staged_choice()
        simulate = []
        for record, explanation in ((first, "words with e"), (second, "river banks")):
            requests = await record_scoring(
                scoring_records(record, settings)[:2],
                explanation,
                lambda backend: run.simulators(choice, backend),
            )
            simulate += [body for _, body in requests]
        return explain, simulate

    explain, simulate = asyncio.run(bodies())
    a, b = explain
    assert a["messages"][:-1] == b["messages"][:-1] and a["messages"][-1] != b["messages"][-1]
    texts = [json.dumps(body.get("messages") or body.get("prompt")) for body in simulate]
    explanations = ["words with e"] * (len(texts) // 2) + ["river banks"] * (len(texts) // 2)
    prefixes = {text[: text.index(e)] for text, e in zip(texts, explanations, strict=True)}
    assert len(prefixes) == 1  # everything before the explanation is the same in every request
    assert len(prefixes.pop()) > 1000  # and it is the bulk: the few-shot examples
