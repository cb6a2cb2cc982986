"""The session over the real-socket fake server: answers cached as the bytes the server sent
(key blanked, cheap compression, old entries still read), and no token count when the server
reports usage."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

import neuron_desk.llm.ledger as ledger_module
import neuron_desk.llm.session as session_module
from neuron_desk.data.store import Store
from neuron_desk.llm.answers import RawAnswer, parse_json, redact_bytes
from neuron_desk.llm.cache import ZSTD_MAGIC, ResponseCache, cache_key, decompress_body
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.ledger import Budget
from neuron_desk.llm.session import LLMSession
from tests.fake_openai import FakeOpenAI, FakeServer, vllm_prompt_logprobs_echo
from tests.llm.conftest import SECRET

pytestmark = pytest.mark.integration

EXPLAIN = {"model": "fake-model", "messages": [{"role": "user", "content": "explain"}], "n": 1}
"""An explanation request: the fake answers it without `usage`."""
SIMULATE = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "<start>\nhello\tunknown\n<end>"}],
}
"""A chat-generation request: the fake answers it with `usage` (100 prompt tokens)."""


def ask(
    fake: FakeOpenAI, store: Store, bodies: list[dict[str, Any]], **session: Any
) -> tuple[LLMSession, list[dict[str, Any]]]:
    """Send `bodies` one after another through a session over the fake server."""

    async def go() -> tuple[LLMSession, list[dict[str, Any]]]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, SECRET) as client:
                llm = LLMSession(client, store=store, **session)
                return llm, [await llm.chat_completions(body) for body in bodies]

    return asyncio.run(go())


def stored_blob(store: Store, body: dict[str, Any], endpoint: str) -> bytes:
    key = cache_key(endpoint, "/chat/completions", body)
    rows = store.query("SELECT response FROM llm_cache_entries WHERE key=?", (key,))
    assert rows, "the answer was not cached"
    return bytes(rows[0][0])


def test_the_cache_stores_the_bytes_the_server_sent(store: Store) -> None:
    fake = FakeOpenAI(explanation=" caf\u00e9 au lait")  # the server escapes it: caf\u00e9
    llm, [answer] = ask(fake, store, [EXPLAIN])
    wire = json.dumps(fake.chat(EXPLAIN)).encode()  # what the fake wrote on the socket
    blob = stored_blob(store, EXPLAIN, llm.endpoint)
    assert decompress_body(blob) == wire  # not a re-encoding of the decoded object
    assert b"\\u00e9" in decompress_body(blob)
    # Cheap compression: zstd when installed, else zlib level 1 (0x78 0x01), not level 6.
    assert blob[:4] == ZSTD_MAGIC or blob[:2] == b"\x78\x01"
    assert answer["choices"][0]["message"]["content"] == " caf\u00e9 au lait"


def test_a_cached_answer_is_served_again_without_a_request(store: Store) -> None:
    fake = FakeOpenAI()
    _, [first, again] = ask(fake, store, [SIMULATE, SIMULATE])
    assert len(fake.requests) == 1
    assert again == first


def test_entries_written_the_old_way_still_read(store: Store) -> None:
    fake = FakeOpenAI(explanation=" the server would say this")
    endpoint = "http://127.0.0.1:1/v1"  # replaced below by the server's
    old_answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " é old"}}]}

    async def go() -> tuple[dict[str, Any], int]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                key = cache_key(client.endpoint_id, "/chat/completions", EXPLAIN)
                # What earlier versions wrote: json.dumps of the decoded object, zlib level 6.
                text = json.dumps(old_answer, ensure_ascii=False)
                with store.transaction() as db:
                    db.execute(
                        "INSERT INTO llm_cache VALUES (?, ?, ?, ?, ?)",
                        (key, endpoint, "fake-model", zlib.compress(text.encode(), 6), time.time()),
                    )
                llm = LLMSession(client, store=store)
                answer = await llm.chat_completions(EXPLAIN)
                return answer, llm.usage.cached_requests

    answer, cached = asyncio.run(go())
    assert answer == old_answer and cached == 1
    assert fake.requests == []


def test_the_key_is_blanked_from_the_whole_body_before_it_is_cached(store: Store) -> None:
    fake = FakeOpenAI(explanation=f" the key is {SECRET} indeed")
    llm, [answer] = ask(fake, store, [EXPLAIN])
    raw = decompress_body(stored_blob(store, EXPLAIN, llm.endpoint))
    assert SECRET.encode() not in raw and SECRET[:12].encode() not in raw
    assert b"***" in raw
    assert SECRET not in json.dumps(answer)
    assert isinstance(answer, RawAnswer) and SECRET.encode() not in answer.raw


def test_redaction_also_finds_the_key_written_json_escaped() -> None:
    secret = "sk-proj/0123456789abcdef"
    body = json.dumps({"text": secret}).replace("/", "\\/").encode()  # as PHP servers write
    redacted = redact_bytes(body, secret)
    assert b"0123456789abcdef" not in redacted
    assert parse_json(redacted) == {"text": "***"}


def test_json_that_orjson_refuses_is_read_by_the_standard_library() -> None:
    assert parse_json(b'{"logprob": -Infinity}') == {"logprob": float("-inf")}
    with pytest.raises(ValueError):
        parse_json(b"<html>")


class Counting:
    """Wraps count_tokens to count its calls (the real tokenizer still counts)."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count = count
        self.calls = 0

    def __call__(self, text: str, *args: Any) -> int:
        self.calls += 1
        return self.count(text, *args)


@pytest.fixture
def tokenizer_calls(monkeypatch: pytest.MonkeyPatch) -> Counting:
    counting = Counting(session_module.count_tokens)
    monkeypatch.setattr(session_module, "count_tokens", counting)
    monkeypatch.setattr(ledger_module, "count_tokens", counting)
    return counting


def test_usage_the_server_reports_is_not_counted_again(
    store: Store, tokenizer_calls: Counting
) -> None:
    llm, _ = ask(FakeOpenAI(), store, [SIMULATE])
    assert tokenizer_calls.calls == 0
    usage = llm.usage
    assert (usage.requests, usage.counted_requests, usage.counted) == (1, 0, False)
    assert usage.prompt_tokens == 100  # the server's figure


def test_an_answer_without_usage_is_counted_and_says_so(
    store: Store, tokenizer_calls: Counting
) -> None:
    llm, _ = ask(FakeOpenAI(), store, [EXPLAIN, SIMULATE])
    assert tokenizer_calls.calls == 2  # the prompt and the completion of the first only
    usage = llm.usage
    assert (usage.requests, usage.counted_requests, usage.counted) == (2, 1, True)
    assert usage.to_json()["counted_requests"] == 1


def test_a_token_budget_counts_the_prompt_before_sending_but_not_the_answer(
    store: Store, tokenizer_calls: Counting
) -> None:
    llm, _ = ask(FakeOpenAI(), store, [SIMULATE], budget=Budget(max_tokens=10_000))
    assert tokenizer_calls.calls == 1  # the reservation; the usage is the server's
    assert llm.usage.counted_requests == 0 and llm.usage.prompt_tokens == 100


def test_a_real_size_logprobs_echo_round_trips_through_the_cache(store: Store) -> None:
    prompt = "".join(f" token{i}\tunknown\n" for i in range(300))
    echo = vllm_prompt_logprobs_echo(prompt)
    raw = json.dumps(echo).encode()
    assert 400_000 < len(raw) < 900_000  # the size vLLM sends for a scoring prompt
    cache = ResponseCache(store)
    body = {"model": "m", "prompt": prompt, "echo": True, "logprobs": 15}
    cache.put("e", "/completions", body, RawAnswer(echo, raw))
    assert cache.get_bytes(cache_key("e", "/completions", body)) == raw
    assert cache.get("e", "/completions", body) == echo
    blob = store.query("SELECT response FROM llm_cache_entries")[0][0]
    assert len(blob) < len(raw) / 2


def test_the_same_request_asked_twice_at_once_is_sent_once(store: Store) -> None:
    """One explanation sampled twice and scored at once asked each simulation twice: both
    calls now share one request, the second answered as a cache hit (consistent with a
    rerun, which the cache answers)."""
    async def go(**options: Any) -> tuple[LLMSession, list[dict[str, Any]]]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, SECRET) as client:
                sessions = [LLMSession(client, store=store, **options) for _ in range(2)]
                answers = await asyncio.gather(
                    *(s.chat_completions(SIMULATE) for s in (*sessions, sessions[0]))
                )
                return sessions[0], list(answers)

    fake = FakeOpenAI(latency=0.2)
    first, answers = asyncio.run(go())
    assert len(fake.requests) == 1
    assert answers[0] == answers[1] == answers[2]
    assert first.usage.requests == 1 and first.usage.cached_requests == 1
    # Asked to regenerate, each call sends its own.
    fake = FakeOpenAI(latency=0.2)  # a fake's latency ends with its first server
    asyncio.run(go(regenerate=True))
    assert len(fake.requests) == 3


def test_a_call_waiting_for_a_request_that_fails_sends_its_own(store: Store) -> None:
    fake = FakeOpenAI(latency=0.2, fail_next=[400])  # the first fails, the next does not

    async def go() -> list[object]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, SECRET) as client:
                session = LLMSession(client, store=store)
                return list(
                    await asyncio.gather(
                        session.chat_completions(SIMULATE),
                        session.chat_completions(SIMULATE),
                        return_exceptions=True,
                    )
                )

    failed, answered = asyncio.run(go())
    assert isinstance(failed, Exception) and isinstance(answered, dict)
    assert len(fake.requests) == 2
