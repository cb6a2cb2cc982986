"""An async client for OpenAI-compatible endpoints (OpenAI, vLLM, llama.cpp, Ollama, OpenRouter).

It implements `core.backend.LLMBackend` and adds what a long scoring run needs:

- a concurrency limit (requests on the wire at once, per client, i.e. per profile);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors,
  honouring `Retry-After` (a 429's pause applies to every request of the client), within a
  bounded total retry time; other 4xx fail at once with the server's own message;
- cancellation: cancelling a caller's task aborts its HTTP request at once (the connection is
  closed), and `cancel_all()` does that for every request in flight;
- one `httpx.AsyncClient` (one connection pool) per client, closed by `aclose()`, over
  `core.wire.LeanTransport` (HTTP/1.1 straight from an asyncio protocol: ~0.6 ms of CPU for
  a 653 KB answer where httpcore, h11 and AnyIO take ~2.3 ms; the same timeouts, TLS checks,
  keep-alive and httpx errors, and a POST never sent twice); `TRANSPORTS["httpcore"]` is
  httpx's own transport (`core.transport.pooled_transport`), kept for comparison.

The API key goes only into the Authorization header of requests to the configured base URL
(redirects are not followed), and is scrubbed from every error message built from a server's
answer. It is never part of a repr, a log line or an exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import (
    BackendConfigError,
    BackendHTTPError,
    BackendResponseError,
    BackendUnavailable,
)
from neuron_desk.core.text import for_terminal, redact
from neuron_desk.core.transport import pooled_transport
from neuron_desk.core.wire import LeanTransport
from neuron_desk.llm.answers import RawAnswer, parse_answer, redact_bytes

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_JSON_HEADERS = {"Content-Type": "application/json"}
"""429 and the 5xx statuses that mean "try again" (any other 5xx is retried too)."""

TRANSPORTS: dict[str, Callable[[int], httpx.AsyncBaseTransport]] = {
    "lean": LeanTransport,
    "httpcore": pooled_transport,
}
"""How the client's connection pool is made, for `max_concurrent` requests at once."""
DEFAULT_TRANSPORT = "lean"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before retrying a failed request.

    Delays grow as `base_delay * 2**(retry-1)`, capped at `max_delay`, and are jittered down by
    up to `jitter` of their length. A `Retry-After` from the server replaces the computed delay.
    `max_attempts` bounds the failed attempts that count: a 429 that says when to come back
    (Retry-After) pauses the client without spending one, up to `max_pauses` times. No retry
    starts once `max_total` seconds have passed since the first attempt, or when its wait would
    end after that. `run_budget` (seconds, None: none) bounds the waiting of all the client's
    requests together: the budget of a long run, after which failures are final at once.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total: float = 180.0
    jitter: float = 0.5
    max_pauses: int = 50
    run_budget: float | None = None

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (1 for the first retry)."""
        delay = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return float(delay * (1.0 - self.jitter * rng.random()))


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass
class ClientStats:
    """Counters of a client (for tests, the benchmark and the status bar)."""

    attempts: int = 0
    """HTTP attempts started, retries included."""
    retries: int = 0
    in_flight: int = 0
    """HTTP attempts on the wire now."""
    max_in_flight: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    pauses: int = 0
    """Retries after a 429 with Retry-After (they spend no attempt)."""
    retry_wait: float = 0.0
    """Seconds of waiting before retries, all requests together (what `run_budget` bounds)."""


def request_content(body: JSONDict) -> bytes:
    """The bytes of a request body as the client sends them (also what a staged batch writes)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class OpenAICompatibleClient:
    """Sends request bodies to `{base_url}/completions`, `/chat/completions` and `/models`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_concurrent: int = 8,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        endpoint_id: str | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise BackendConfigError(f"base URL must start with http:// or https://: {base_url!r}")
        if max_concurrent < 1:
            raise BackendConfigError("max concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.endpoint_id = endpoint_id or self.base_url
        """What the cache, the ledger and the capability table call this endpoint."""
        self.timeout = timeout
        self.max_concurrent = max_concurrent
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._secret = api_key or None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._http = self._open_http(max_concurrent)
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock: Clock = clock or time.monotonic
        self._rng = random.Random(seed)
        self._paused_until = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def _open_http(self, max_concurrent: int) -> httpx.AsyncClient:
        """The connection pool for `max_concurrent` requests at once. Requests are built as
        this `httpx.AsyncClient` builds them (its headers, its timeouts) and handed straight
        to its transport (`_send`)."""
        self._pool = self._transport or TRANSPORTS[DEFAULT_TRANSPORT](max_concurrent)
        http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_concurrent, max_keepalive_connections=max_concurrent
            ),
            follow_redirects=False,
            transport=self._pool,
        )
        self._timeouts = http.timeout.as_dict()
        self._request_headers = http.headers.copy()
        """The client's headers (httpx's defaults, the key's Authorization)."""
        self._json_headers = httpx.Headers({**self._request_headers, **_JSON_HEADERS})
        self._through_httpx = bool(http.base_url.userinfo)
        """A base URL with a user name or password: httpx's own request path (its basic auth)."""
        return http

    async def _send(self, method: str, url: str, content: bytes | None) -> httpx.Response:
        """One HTTP exchange, its body read whole: what `httpx.AsyncClient.request` does for
        this client (no redirects followed, no cookies, no auth flow, no event hooks), without
        the per-request merging of its URL, headers and cookie jar (and without its INFO log
        line per request)."""
        if self._through_httpx:
            headers = None if content is None else _JSON_HEADERS
            return await self._http.request(method, url, content=content, headers=headers)
        request = httpx.Request(
            method,
            url,
            headers=self._request_headers if content is None else self._json_headers,
            content=content,
            extensions={"timeout": self._timeouts},
        )
        response = await self._pool.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def __repr__(self) -> str:
        return f"OpenAICompatibleClient({self.base_url!r})"

    # --- the LLMBackend protocol ---

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /completions."""
        return await self.request("POST", "/completions", body)

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /chat/completions."""
        return await self.request("POST", "/chat/completions", body)

    async def list_models(self) -> list[str]:
        """The model ids the endpoint lists under /models."""
        data = await self.request("GET", "/models", None)
        models = data.get("data")
        if not isinstance(models, list):
            raise BackendResponseError(f"{self.base_url}/models did not return a model list")
        return [str(m.get("id")) for m in models if isinstance(m, dict)]

    # --- cancellation and closing ---

    @property
    def in_flight(self) -> int:
        """Requests started and not finished (waiting for a slot, on the wire or backing off)."""
        return len(self._tasks)

    def cancel_all(self) -> int:
        """Cancel every request in progress (their callers get `CancelledError`); how many."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def aclose(self) -> None:
        """Cancel what is in flight and close the connection pool."""
        self._closed = True
        self.cancel_all()
        await self._http.aclose()

    async def raise_concurrency(self, limit: int) -> None:
        """Allow `limit` requests on the wire at once, above the profile's `max_concurrency`
        (a batch's `--concurrency`); a lower `limit` changes nothing. The connection pool is
        rebuilt for the new size, so this needs a client with nothing in flight;
        BackendConfigError says so otherwise."""
        if limit <= self.max_concurrent:
            return
        if self._closed:
            raise BackendConfigError(f"the client for {self.base_url} is closed")
        if self._tasks or self.stats.in_flight:
            raise BackendConfigError(
                f"requests to {self.base_url} are in flight, so the limit stays at "
                f"{self.max_concurrent} (the connection pool is resized only when idle)"
            )
        extra = limit - self.max_concurrent
        self.max_concurrent = limit
        for _ in range(extra):  # a semaphore's limit grows by releasing it
            self._semaphore.release()
        if self._transport is None:  # a transport given by the caller is the caller's
            old = self._http
            self._http = self._open_http(limit)
            await old.aclose()

    async def __aenter__(self) -> OpenAICompatibleClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the request loop ---

    async def request(self, method: str, path: str, body: JSONDict | None) -> JSONDict:
        """Send one request, retrying as the policy allows; the decoded JSON object."""
        if self._closed:
            raise BackendConfigError(f"the client for {self.base_url} is closed")
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._with_retries(method, path, body)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _with_retries(self, method: str, path: str, body: JSONDict | None) -> JSONDict:
        url = f"{self.base_url}{path}"
        policy = self.retry
        started = self._clock()
        attempt = 0  # failed attempts that count against max_attempts
        pauses = 0  # 429s with Retry-After, which do not
        while True:
            await self._wait_for_pause()
            try:
                return await self._attempt(method, path, url, body)
            except _Retryable as failure:
                self.stats.failures[failure.kind] = self.stats.failures.get(failure.kind, 0) + 1
                elapsed = self._clock() - started
                paused = failure.retry_after is not None and failure.status == 429
                if paused:
                    pauses += 1
                else:
                    attempt += 1
                tries = attempt + pauses
                wait = (
                    failure.retry_after
                    if failure.retry_after is not None
                    else policy.delay(attempt, self._rng)
                )
                if attempt >= policy.max_attempts or pauses > policy.max_pauses:
                    raise failure.final(tries, elapsed, None) from None
                if elapsed + wait > policy.max_total:
                    raise failure.final(tries, elapsed, wait) from None
                budget = policy.run_budget
                if budget is not None and self.stats.retry_wait + wait > budget:
                    raise failure.final(tries, elapsed, wait, run_budget=budget) from None
                logger.info("%s %s: %s; retry %d in %.2f s", method, url, failure.kind, tries, wait)
                self.stats.retries += 1
                self.stats.retry_wait += wait
                if paused:
                    self.stats.pauses += 1
                    self._paused_until = max(self._paused_until, self._clock() + wait)
                else:
                    await self._sleep(wait)

    async def _wait_for_pause(self) -> None:
        """Wait while the endpoint has asked (Retry-After on a 429) for a pause."""
        while True:
            remaining = self._paused_until - self._clock()
            if remaining <= 0:
                return
            await self._sleep(remaining)

    async def _attempt(self, method: str, path: str, url: str, body: JSONDict | None) -> JSONDict:
        async with self._semaphore:
            self.stats.attempts += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                async with asyncio.timeout(self.timeout + 5.0):
                    response = await self._send(
                        method, url, None if body is None else request_content(body)
                    )
            except (httpx.TimeoutException, TimeoutError):
                raise _Retryable("timeout", f"{url} timed out after {self.timeout:g} s") from None
            except httpx.TransportError as exc:
                raise _Retryable(
                    "connection", f"could not reach {url}: {type(exc).__name__}"
                ) from None
            finally:
                self.stats.in_flight -= 1
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status}",
                _error_message(response, self._redact),
                status=status,
                url=url,
                retry_after=_retry_after(response),
            )
        if 300 <= status < 400:
            location = response.headers.get("location", "elsewhere")
            raise BackendHTTPError(
                status,
                f"the endpoint redirects to {self._redact(location)}; set the profile's base URL "
                "to the final address (requests are not sent on to other hosts)",
                url,
            )
        if status >= 400:
            raise BackendHTTPError(status, _error_message(response, self._redact), url)
        # The key is blanked from the whole body before anything reads it: the model's own
        # output (an echoed prompt, a key it repeats) reaches the cache, store and exports.
        # The redacted bytes are kept with the decoded object, so the cache stores them as
        # they are (no second encoding of a 640 KB logprobs echo). An echo's per-position top
        # logprobs are decoded when read (`parse_answer`): the scorer reads ~64 of ~1,400.
        raw = redact_bytes(response.content, self._secret)
        try:
            data = parse_answer(raw)
        except ValueError:
            text = raw[:120].decode("utf-8", errors="replace")
            raise BackendResponseError(
                f"{url} answered with something that is not JSON: {for_terminal(text)!r}"
            ) from None
        if not isinstance(data, dict):
            raise BackendResponseError(f"{url} answered with JSON that is not an object")
        if data.get("error") and "choices" not in data and "data" not in data:
            message = str(data["error"])[:300]
            raise BackendResponseError(f"{url} answered 200 with an error: {message}")
        return RawAnswer(data, raw)

    def _redact(self, text: str) -> str:
        """`text` with the API key (should a server echo it) replaced by ***."""
        return redact(text, [self._secret])


class _Retryable(Exception):
    """A failure worth retrying; `final` is the error raised when no retry is left."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.url = url
        self.retry_after = retry_after

    def final(
        self,
        attempts: int,
        elapsed: float,
        wait: float | None,
        *,
        run_budget: float | None = None,
    ) -> Exception:
        """The error to raise: no attempt left, or the next wait would pass a time limit."""
        tried = f"gave up after {attempts} attempt{'s' * (attempts > 1)} in {elapsed:.1f} s"
        if run_budget is not None:
            tried += f" (the run's retry budget, {run_budget:g} s of waiting, is spent)"
        elif wait is not None:
            tried += f" (the next wait, {wait:.1f} s, would pass the retry time limit)"
        if self.status is not None:
            hint = " (rate limited: lower the profile's concurrency or wait)" * (self.status == 429)
            return BackendHTTPError(self.status, f"{self.message}{hint}; {tried}", self.url)
        return BackendUnavailable(f"{self.message}; {tried}")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by Retry-After (seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        ms = response.headers.get("retry-after-ms")
        try:
            return max(0.0, float(ms) / 1000.0) if ms is not None else None
        except ValueError:
            return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response, redact_key: Callable[[str], str]) -> str:
    """The server's own words for an error response (OpenAI's `error.message` if present),
    with the key blanked before the text is cut to 500 characters."""
    text = redact_key(response.text)
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text[:500].strip() or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        if isinstance(data.get("detail"), str | list):  # FastAPI servers (llama_cpp.server)
            return str(data["detail"])[:500]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:500]
    return text[:500]
