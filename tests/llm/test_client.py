"""The HTTP client against the fake server over real sockets: retries, limits, cancellation."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from neuron_desk.core.errors import (
    BackendConfigError,
    BackendHTTPError,
    BackendResponseError,
    BackendUnavailable,
)
from neuron_desk.llm.client import OpenAICompatibleClient, RetryPolicy
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.llm.conftest import SECRET, Sleeps, until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("http_transport")]

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def client(server: FakeServer, sleeps: Sleeps | None = None, **kwargs) -> OpenAICompatibleClient:  # type: ignore[no-untyped-def]
    sleeps = sleeps or Sleeps()
    return OpenAICompatibleClient(
        server.base_url, SECRET, sleep=sleeps, clock=sleeps.clock, seed=1, **kwargs
    )


def test_429_with_retry_after_is_honoured_then_succeeds() -> None:
    fake = FakeOpenAI(fail_next=[429, 429], retry_after=7)
    sleeps = Sleeps()

    async def go() -> dict:
        with FakeServer(fake) as server:
            async with client(server, sleeps) as c:
                return await c.chat_completions(BODY)

    response = run(go())
    assert response["choices"][0]["message"]["content"] == fake.explanation
    assert sleeps.waits == [7.0, 7.0]  # the server's wait, not the backoff's
    assert len(fake.requests) == 3


def test_500_then_success_with_exponential_backoff() -> None:
    fake = FakeOpenAI(fail_next=[500, 502, 503])
    sleeps = Sleeps()
    policy = RetryPolicy(base_delay=1.0, jitter=0.0)

    async def go() -> dict:
        with FakeServer(fake) as server:
            async with client(server, sleeps, retry=policy) as c:
                return await c.completions({"model": "m", "prompt": "p", "max_tokens": 1})

    run(go())
    assert sleeps.waits == [1.0, 2.0, 4.0]
    assert len(fake.requests) == 4


def test_jitter_stays_within_bounds() -> None:
    import random

    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.5)
    rng = random.Random(0)
    for retry in range(1, 8):
        full = min(8.0, 2 ** (retry - 1))
        assert all(full / 2 <= policy.delay(retry, rng) <= full for _ in range(50))


def test_400_fails_fast_with_the_servers_message() -> None:
    fake = FakeOpenAI(fail_next=[400])
    sleeps = Sleeps()

    async def go() -> None:
        with FakeServer(fake) as server:
            async with client(server, sleeps) as c:
                await c.chat_completions(BODY)

    with pytest.raises(BackendHTTPError) as info:
        run(go())
    assert info.value.status_code == 400
    assert "scripted failure 400" in str(info.value)
    assert sleeps.waits == [] and len(fake.requests) == 1


def test_retries_stop_at_the_attempt_limit() -> None:
    fake = FakeOpenAI(fail_next=[503] * 10)
    sleeps = Sleeps()

    async def go() -> None:
        with FakeServer(fake) as server:
            async with client(server, sleeps, retry=RetryPolicy(max_attempts=3)) as c:
                await c.chat_completions(BODY)

    with pytest.raises(BackendHTTPError, match="gave up after 3 attempts") as info:
        run(go())
    assert info.value.status_code == 503 and len(fake.requests) == 3


def test_total_retry_time_is_bounded() -> None:
    fake = FakeOpenAI(fail_next=[429] * 10, retry_after=50)
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=100, max_total=120.0)

    async def go() -> None:
        with FakeServer(fake) as server:
            async with client(server, sleeps, retry=policy) as c:
                await c.chat_completions(BODY)

    with pytest.raises(BackendHTTPError, match="retry time limit") as info:
        run(go())
    assert info.value.status_code == 429
    assert sleeps.waits == [50.0, 50.0]  # a third wait would end after 120 s


def test_dropped_connection_and_garbage() -> None:
    fake = FakeOpenAI(drop_next=2)

    async def go() -> dict:
        with FakeServer(fake) as server:
            async with client(server) as c:
                return await c.chat_completions(BODY)

    assert run(go())["choices"]  # two drops, then an answer
    assert len(fake.requests) == 3

    fake = FakeOpenAI(garbage_next=1)
    with pytest.raises(BackendResponseError, match="not JSON"):
        run(go())


def test_connection_refused_is_unavailable_after_retries() -> None:
    sleeps = Sleeps()

    async def go() -> None:
        with FakeServer(FakeOpenAI()) as server:
            url = server.base_url
        async with OpenAICompatibleClient(
            url, sleep=sleeps, clock=sleeps.clock, retry=RetryPolicy(max_attempts=3)
        ) as c:
            await c.chat_completions(BODY)

    with pytest.raises(BackendUnavailable, match=r"could not reach .*gave up after 3"):
        run(go())
    assert len(sleeps.waits) == 2


def test_timeout_is_retried_then_reported() -> None:
    fake = FakeOpenAI(hang=True)

    async def go() -> None:
        with FakeServer(fake) as server:
            async with client(server, timeout=0.2, retry=RetryPolicy(max_attempts=2)) as c:
                await c.chat_completions(BODY)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timed out"):
        run(go())
    assert time.monotonic() - started < 5
    assert len(fake.requests) == 2


def test_concurrency_never_above_the_limit() -> None:
    fake = FakeOpenAI(latency=0.03)

    async def go() -> OpenAICompatibleClient:
        with FakeServer(fake) as server:
            async with client(server, max_concurrent=3) as c:
                await asyncio.gather(*(c.chat_completions(BODY) for _ in range(20)))
                return c

    c = run(go())
    assert fake.max_active <= 3 and c.stats.max_in_flight <= 3
    assert fake.max_active == 3  # and the limit is used
    assert len(fake.requests) == 20


def test_cancellation_stops_requests_in_flight_at_once() -> None:
    fake = FakeOpenAI(hang=True)

    async def go() -> tuple[int, int]:
        with FakeServer(fake) as server:
            async with client(server, max_concurrent=4) as c:
                tasks = [asyncio.create_task(c.chat_completions(BODY)) for _ in range(10)]
                await until(lambda: fake.active >= 4)
                for task in tasks:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                assert all(isinstance(r, asyncio.CancelledError) for r in results)
                assert c.in_flight == 0 and c.stats.in_flight == 0
                await until(lambda: fake.active == 0)
                return fake.active, len(fake.requests)

    active, sent = run(go())
    assert active == 0  # the server saw every connection go away
    assert sent == 4  # the six waiting for a slot never went out
    assert fake.aborted == 4


def test_cancel_all_aborts_every_caller() -> None:
    fake = FakeOpenAI(hang=True)

    async def go() -> list:
        with FakeServer(fake) as server:
            async with client(server, max_concurrent=2) as c:
                tasks = [asyncio.create_task(c.chat_completions(BODY)) for _ in range(5)]
                await until(lambda: fake.active >= 2)
                assert c.cancel_all() == 5
                return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(go())
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


def test_key_only_in_the_authorization_header_and_never_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeOpenAI(fail_next=[500, 401], echo_auth_in_errors=True)

    async def go() -> None:
        with FakeServer(fake) as server:
            async with client(server) as c:
                assert SECRET not in repr(c)
                await c.chat_completions(BODY)

    with pytest.raises(BackendHTTPError) as info:
        run(go())
    assert fake.authorization == [f"Bearer {SECRET}"] * 2
    assert "***" in str(info.value)  # the server repeated the key; we did not
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in caplog.text


def test_redirects_are_not_followed_so_the_key_stays_home() -> None:
    other = FakeOpenAI()
    with FakeServer(other) as elsewhere:
        fake = FakeOpenAI(redirect_to=elsewhere.base_url.rsplit("/v1", 1)[0])

        async def go() -> None:
            with FakeServer(fake) as server:
                async with client(server) as c:
                    await c.chat_completions(BODY)

        with pytest.raises(BackendHTTPError, match="redirects to"):
            run(go())
    assert other.requests == []


def test_bad_configuration() -> None:
    with pytest.raises(BackendConfigError):
        OpenAICompatibleClient("ftp://example.org")
    with pytest.raises(BackendConfigError):
        OpenAICompatibleClient("http://127.0.0.1:9", max_concurrent=0)


def test_retry_after_as_http_date_and_ms() -> None:
    from neuron_desk.llm.client import _retry_after

    date = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert _retry_after(date) == 0.0  # in the past: no wait
    assert _retry_after(httpx.Response(429, headers={"retry-after-ms": "250"})) == 0.25
    assert _retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert _retry_after(httpx.Response(429)) is None


def test_list_models() -> None:
    async def go() -> list[str]:
        with FakeServer(FakeOpenAI()) as server:
            async with client(server) as c:
                return await c.list_models()

    assert run(go()) == ["fake-model"]


def test_high_concurrency_stays_within_the_limit(http_transport: str) -> None:
    fake = FakeOpenAI(latency=0.05)

    async def go() -> OpenAICompatibleClient:
        with FakeServer(fake) as server:
            async with client(server, max_concurrent=24) as c:
                await asyncio.gather(*(c.chat_completions(BODY) for _ in range(72)))
                return c

    c = run(go())
    expected = {"lean": "LeanTransport", "httpcore": "_ShardedTransport"}[http_transport]
    assert type(c._http._transport).__name__ == expected
    assert fake.max_active == 24 and c.stats.max_in_flight == 24
    assert len(fake.requests) == 72


def test_429_pauses_spend_no_attempt_but_500s_do() -> None:
    """Issue 14.2: eight 429s with Retry-After and two 500s fit in three attempts."""
    fake = FakeOpenAI(fail_next=[429, 500, 429, 429, 429, 429, 500, 429, 429, 429], retry_after=1)
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=3, base_delay=2.0, jitter=0.0)

    async def go(body: dict) -> dict:
        with FakeServer(fake) as server:
            async with client(server, sleeps, retry=policy) as c:
                response = await c.chat_completions(body)
                assert c.stats.pauses == 8
                return response

    assert run(go(BODY))["choices"]
    assert sorted(sleeps.waits) == [1.0] * 8 + [2.0, 4.0]
    fake.fail_next = [500, 500, 500]
    with pytest.raises(BackendHTTPError, match=r"gave up after 3 attempts in \d+\.\d s"):
        run(go(BODY))


def test_the_run_retry_budget_bounds_all_requests_together() -> None:
    fake = FakeOpenAI(fail_next=[500, 500, 500])
    sleeps = Sleeps()
    policy = RetryPolicy(base_delay=2.0, jitter=0.0, run_budget=5.0)

    async def go() -> None:
        with FakeServer(fake) as server:
            async with client(server, sleeps, retry=policy) as c:
                await c.chat_completions(BODY)

    with pytest.raises(BackendHTTPError, match=r"retry budget, 5 s of waiting, is spent"):
        run(go())
    assert sleeps.waits == [2.0]
