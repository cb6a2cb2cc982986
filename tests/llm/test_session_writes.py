"""What a session writes to the store for a request it sent, over the real-socket fake server
and a real SQLite file: the cached answer and its usage row in one transaction, off the event
loop; requests sent before a failure or a cancellation stay on record, once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from neuron_desk.core.errors import BackendHTTPError
from neuron_desk.data.store import Store
from neuron_desk.llm.cache import ResponseCache
from neuron_desk.llm.client import NO_RETRY, OpenAICompatibleClient
from neuron_desk.llm.session import LLMSession
from tests.fake_openai import FakeOpenAI, FakeServer

pytestmark = pytest.mark.integration

SIMULATE = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "<start>\nhello\tunknown\n<end>"}],
}
"""A chat-generation request: the fake answers it with `usage` (100 prompt tokens)."""
SAMPLES = {"model": "fake-model", "messages": [{"role": "user", "content": "explain"}], "n": 3}


def usage_rows(store: Store) -> list[tuple[Any, ...]]:
    return store.query("SELECT run, model, prompt_tokens, cached FROM usage ORDER BY rowid")


def test_the_answer_and_its_usage_row_are_written_together_off_the_event_loop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    put = ResponseCache.put_by_key

    def recording_put(self: ResponseCache, *args: Any) -> None:
        threads.append(threading.current_thread().name)
        put(self, *args)

    monkeypatch.setattr(ResponseCache, "put_by_key", recording_put)

    async def go() -> tuple[int, list[tuple[Any, ...]]]:
        with FakeServer(FakeOpenAI()) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                llm = LLMSession(client, store=store, run="r1")
                await llm.chat_completions(SIMULATE)
                # Both are committed when the call returns, nothing is left to flush.
                return ResponseCache(store).count(), usage_rows(store)

    cached, rows = asyncio.run(go())
    assert cached == 1 and rows == [("r1", "fake-model", 100, 0)]
    assert threads and threads[0] != threading.main_thread().name


def test_requests_sent_before_a_failure_stay_on_record(store: Store) -> None:
    """n=3 from a server that ignores n: the first answer (one sample) is billed, the top-up
    request is refused; the run fails, nothing is cached, the request sent is on record."""
    fake = FakeOpenAI(ignore_n=True, reject_text='"n": 2')

    async def go() -> None:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url, retry=NO_RETRY) as client:
                await LLMSession(client, store=store, run="r2").chat_completions(SAMPLES)

    with pytest.raises(BackendHTTPError, match="rejected"):
        asyncio.run(go())
    assert len(fake.requests) == 2
    assert ResponseCache(store).count() == 0
    assert [row[0] for row in usage_rows(store)] == ["r2"]


def test_a_call_cancelled_while_its_answer_is_written_records_it_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage row goes to the worker with the answer: cancelling the caller meanwhile
    neither loses it nor writes it twice."""
    put = ResponseCache.put_by_key
    writing = threading.Event()

    def slow_put(self: ResponseCache, *args: Any) -> None:
        writing.set()
        time.sleep(0.3)
        put(self, *args)

    monkeypatch.setattr(ResponseCache, "put_by_key", slow_put)

    async def go() -> None:
        with FakeServer(FakeOpenAI()) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                llm = LLMSession(client, store=store, run="r3")
                call = asyncio.ensure_future(llm.chat_completions(SIMULATE))
                while not writing.is_set():
                    await asyncio.sleep(0.01)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                await asyncio.sleep(0.5)  # the worker finishes the write

    asyncio.run(go())
    assert ResponseCache(store).count() == 1
    assert usage_rows(store) == [("r3", "fake-model", 100, 0)]


def test_without_a_cache_the_usage_is_still_written(store: Store) -> None:
    async def go() -> None:
        with FakeServer(FakeOpenAI()) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                llm = LLMSession(client, store=store, run="r4", use_cache=False)
                await llm.chat_completions(SIMULATE)
                await llm.chat_completions(SIMULATE)

    asyncio.run(go())
    assert ResponseCache(store).count() == 0
    assert usage_rows(store) == [("r4", "fake-model", 100, 0)] * 2


def test_a_server_reporting_usage_as_vllm_does_is_not_counted(store: Store) -> None:
    """The fake's `usage=True` (the batch benchmark's vLLM) reports usage on every answer."""
    fake = FakeOpenAI(usage=True)
    echo = {"model": "fake-model", "prompt": "abcdefgh", "echo": True, "logprobs": 5}

    async def go() -> LLMSession:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                llm = LLMSession(client, store=store)
                await llm.chat_completions(SAMPLES)
                await llm.completions(echo)
                return llm

    usage = asyncio.run(go()).usage
    assert usage.requests == 2 and usage.counted_requests == 0
    assert usage.prompt_tokens == 2 + 2  # "explain" and "abcdefgh", 4 characters a token
