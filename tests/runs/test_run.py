"""Explain and score one neuron end to end through the real client, the cache and the ledger."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from neuron_desk.core import codec
from neuron_desk.core.errors import BackendHTTPError, BudgetExceeded
from neuron_desk.core.model import ScoredExplanation, SimulatorMethod
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.ledger import Budget, Price, PriceTable, usage_totals
from neuron_desk.runs.run import NeuronRun, RunOptions, ScoreOutcome
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.llm.conftest import SECRET, until
from tests.synthetic import neuron_record, oracle

pytestmark = pytest.mark.integration

WHERE = NeuronRef("synthetic", 3, 7)


def options(**kwargs) -> RunOptions:  # type: ignore[no-untyped-def]
    return RunOptions(explainer_model="fake-model", simulator_model="fake-model", **kwargs)


async def score_once(
    fake: FakeOpenAI, store: Store | None, explanation: str = "the letter e", **kwargs
) -> tuple[ScoreOutcome, NeuronRun]:  # type: ignore[no-untyped-def]
    with FakeServer(fake) as server:
        async with OpenAICompatibleClient(server.base_url, SECRET, max_concurrent=8) as client:
            run = NeuronRun(client, options(**kwargs), store=store, profile="test")
            outcome = await run.score(neuron_record(), explanation, ref=WHERE)
            return outcome, run


@pytest.mark.parametrize(
    ("switches", "forced", "method"),
    [
        ({}, None, SimulatorMethod.PROMPT_LOGPROBS),
        ({"echo": "reject"}, None, SimulatorMethod.CHAT_GENERATION),
        ({"echo": "reject", "chat_logprobs": False}, None, SimulatorMethod.ONE_AT_A_TIME),
        ({}, SimulatorMethod.ONE_AT_A_TIME, SimulatorMethod.ONE_AT_A_TIME),
        ({}, SimulatorMethod.CHAT_GENERATION, SimulatorMethod.CHAT_GENERATION),
    ],
)
def test_each_simulator_end_to_end(
    store: Store, switches: dict, forced: SimulatorMethod | None, method: SimulatorMethod
) -> None:
    fake = FakeOpenAI(neuron=oracle, **switches)
    outcome, run = asyncio.run(score_once(fake, store, method=forced))
    assert outcome.method == method
    assert outcome.scored is not None
    score = outcome.scored.get_preferred_score()
    assert score is not None and score > 0.9
    assert outcome.sequences == 10
    result = outcome.to_json()
    assert result["method"] == method.value and result["model"] == "fake-model"
    for key in ("explanation", "score", "rsquared", "absolute_dev_explained", "usage", "requests"):
        assert key in result
    # Stored with provenance, and the stored result reads back.
    (row,) = Explanations(store).of(WHERE)
    assert row.source == "user" and row.score == pytest.approx(score)
    assert row.provenance["method"] == method.value
    assert row.provenance["endpoint"].startswith("http://127.0.0.1:")
    assert row.provenance["usage"]["requests"] == outcome.usage.requests > 0
    stored = codec.loads(Explanations(store).result(row.id) or "", ScoredExplanation)
    assert stored.scored_simulation.method == method.value
    # The ledger: every request is in the store's usage table under this run.
    ((_, model, sent, cached, prompt, _completion),) = [
        (t.endpoint, t.model, t.requests, t.cached_requests, t.prompt_tokens, t.completion_tokens)
        for t in usage_totals(store, run.run_id)
    ]
    assert (model, sent, cached) == ("fake-model", outcome.usage.requests, 0)
    assert prompt == outcome.usage.prompt_tokens > 0


def test_rescoring_is_answered_from_the_cache(store: Store) -> None:
    fake = FakeOpenAI(neuron=oracle)

    async def score(server: FakeServer, explanation: str) -> ScoreOutcome:
        async with OpenAICompatibleClient(server.base_url) as client:
            run = NeuronRun(client, options(), store=store)
            return await run.score(neuron_record(), explanation, ref=WHERE)

    async def go() -> None:
        with FakeServer(fake) as server:
            first = await score(server, "the letter e")
            sent = len(fake.requests)
            second = await score(server, "the letter e")
            assert len(fake.requests) == sent  # zero requests the second time
            assert second.usage.requests == 0 and second.usage.cached_requests == 10
            assert second.to_json()["score"] == first.to_json()["score"]
            await score(server, "vowels")  # a different explanation: new requests
            assert len(fake.requests) == sent + 10

    asyncio.run(go())


def test_explain_samples_are_cached_and_regenerate_bypasses(store: Store) -> None:
    fake = FakeOpenAI(neuron=oracle, explanation=" the letter e", ignore_n=True)

    async def explain(server: FakeServer, **kwargs) -> list[ScoreOutcome]:  # type: ignore[no-untyped-def]
        async with OpenAICompatibleClient(server.base_url) as client:
            run = NeuronRun(client, options(samples=3, **kwargs), store=store)
            return await run.explain(neuron_record(), ref=WHERE)

    async def go() -> None:
        with FakeServer(fake) as server:
            outcomes = await explain(server)
            explain_requests = [b for _, b in fake.requests if b.get("n")]
            assert [b["n"] for b in explain_requests] == [3, 2, 1]  # topped up: n is ignored
            assert len(outcomes) == 3 and all(o.explanation == "the letter e" for o in outcomes)
            assert all((o.scored.get_preferred_score() or 0) > 0.9 for o in outcomes if o.scored)
            rows = Explanations(store).of(WHERE)
            assert len(rows) == 3 and {r.source for r in rows} == {"generated"}
            assert rows[0].provenance["explainer_model"] == "fake-model"
            assert "Neuron" in rows[0].provenance["explanation_prompt"]
            sent = len(fake.requests)
            await explain(server)  # same samples and scores, from the cache
            assert len(fake.requests) == sent
            await explain(server, regenerate=True)  # fresh samples (and fresh scoring)
            assert len(fake.requests) > sent

    asyncio.run(go())


def test_budget_cap_stops_the_run_cleanly(store: Store) -> None:
    fake = FakeOpenAI(neuron=oracle, latency=0.01)

    async def go() -> tuple[NeuronRun, int]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=2) as client:
                run = NeuronRun(client, options(budget=Budget(max_tokens=5_000)), store=store)
                with pytest.raises(BudgetExceeded, match="budget of 5,000 tokens"):
                    await run.score(neuron_record(), "the letter e", ref=WHERE)
                assert run.in_flight == 0
                await asyncio.sleep(0.1)
                return run, len(fake.requests)

    run, sent = asyncio.run(go())
    assert 0 < sent < 10 + 4  # stopped before all ten simulations (plus the probe)
    assert run.usage.total_tokens <= 5_000
    assert Explanations(store).of(WHERE) == []  # nothing half-done is stored


def test_money_budget_with_prices(store: Store) -> None:
    prices = PriceTable()
    prices.set("fake-model", Price(prompt=1000.0, completion=1000.0))  # $0.001 per token

    async def go() -> None:
        with FakeServer(FakeOpenAI(neuron=oracle)) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                run = NeuronRun(
                    client, options(budget=Budget(max_cost=5.0)), store=store, prices=prices
                )
                await run.score(neuron_record(), "the letter e")

    with pytest.raises(BudgetExceeded, match=r"budget of \$5"):
        asyncio.run(go())


def test_cost_is_recorded_when_priced(store: Store) -> None:
    prices = PriceTable()
    prices.set("fake", Price(prompt=1.0, completion=2.0))  # a prefix of "fake-model"

    async def go() -> ScoreOutcome:
        with FakeServer(FakeOpenAI(neuron=oracle)) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                run = NeuronRun(client, options(), store=store, prices=prices)
                return await run.score(neuron_record(), "the letter e", ref=WHERE)

    outcome = asyncio.run(go())
    usage = outcome.usage
    expected = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    assert outcome.provenance["cost_usd"] == pytest.approx(expected)


def test_cancellation_mid_run_leaves_nothing_in_flight(store: Store) -> None:
    fake = FakeOpenAI(neuron=oracle, hang=True)

    async def go() -> NeuronRun:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=4) as client:
                # Probe first (the hanging switch is turned on after it).
                fake.hang = False
                run = NeuronRun(client, options(), store=store)
                await run.choose_method()
                fake.hang = True
                task = asyncio.create_task(run.score(neuron_record(), "the letter e"))
                await until(lambda: fake.active >= 4)
                sent = len(fake.requests)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert run.in_flight == 0 and client.in_flight == 0
                await until(lambda: fake.active == 0)
                await asyncio.sleep(0.1)
                assert len(fake.requests) == sent  # nothing new went out after the cancel
                return run

    asyncio.run(go())
    assert fake.aborted == 4


def test_run_cancel_aborts_every_request(store: Store) -> None:
    fake = FakeOpenAI(neuron=oracle, hang=True)

    async def go() -> None:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=3) as client:
                run = NeuronRun(client, options(method=SimulatorMethod.CHAT_GENERATION))
                task = asyncio.create_task(run.score(neuron_record(), "the letter e"))
                await until(lambda: fake.active >= 3)
                assert run.cancel() > 0
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert run.in_flight == 0

    asyncio.run(go())


def test_the_key_never_reaches_store_logs_or_exports(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeOpenAI(neuron=oracle, fail_next=[500], echo_auth_in_errors=True)
    outcome, _ = asyncio.run(score_once(fake, store))
    asyncio.run(score_once(FakeOpenAI(neuron=oracle, explanation=" e"), store, "vowels"))
    assert all(a == f"Bearer {SECRET}" for a in fake.authorization)  # it was sent, to the fake
    secret = SECRET.encode()
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(outcome.to_json()) and SECRET not in json.dumps(
        outcome.provenance
    )
    from neuron_desk.data.exports import generated_exports, write_exports

    exported = tmp_path / "export.jsonl"
    write_exports(generated_exports(Explanations(store), WHERE.dataset), exported)
    assert secret not in exported.read_bytes()
    assert secret not in Path(f"{exported}.provenance.json").read_bytes()
    store.close()
    for path in store.path.parent.glob(store.path.name + "*"):
        assert secret not in path.read_bytes(), path


def test_usage_from_responses_or_counted(store: Store) -> None:
    chat, _ = asyncio.run(
        score_once(FakeOpenAI(neuron=oracle), store, method=SimulatorMethod.CHAT_GENERATION)
    )
    assert chat.usage.prompt_tokens == 100 * 10  # the fake reports 100 per request
    assert not chat.usage.counted
    echo, _ = asyncio.run(score_once(FakeOpenAI(neuron=oracle), store, "vowels"))
    assert echo.usage.counted and echo.usage.prompt_tokens > 10 * 1000  # counted by tiktoken


def test_a_failing_call_does_not_cancel_the_others(store: Store) -> None:
    fake = FakeOpenAI(neuron=oracle, latency=0.01, reject_text="REJECT ME")

    async def go() -> list:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=4) as client:
                run = NeuronRun(client, options(), store=store)
                await run.choose_method()
                results = await asyncio.gather(
                    run.score(neuron_record(), "the letter e"),
                    run.score(neuron_record(), "REJECT ME"),
                    return_exceptions=True,
                )
                assert run.in_flight == 0 and run.sessions == []
                return results

    good, bad = asyncio.run(go())
    assert isinstance(bad, BackendHTTPError) and "rejected" in str(bad)
    assert isinstance(good, ScoreOutcome) and (good.scored.get_preferred_score() or 0) > 0.9
