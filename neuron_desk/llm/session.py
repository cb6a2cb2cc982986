"""A run's view of an endpoint: the response cache, the usage ledger and the budget.

`LLMSession` wraps an endpoint backend (an `OpenAICompatibleClient` or the local backend) and
is itself an `LLMBackend`, so explainers and simulators take it as `backend=`. For each request:

1. the response cache (`neuron_desk.llm.cache`) is looked up by endpoint + path + the exact
   request body (which names the model): a hit costs no request, so re-scoring the same
   explanation on the same data sends nothing. Sampling with temperature > 0 (explanations
   with n > 1) is cached the same way; `regenerate=True` skips the lookup (and refreshes it).
   A request already on its way for another call over the same store (one explanation
   sampled twice, scored twice at once) is not sent again: its answer, once cached, answers
   both, as a cache hit;
2. the budget is checked (`BudgetExceeded` before anything is sent once the cap is reached);
3. the response's usage goes into the ledger and the store: the server's own report, or a
   tiktoken count only when it sends none (and the ledger says which). The cached answer and
   the usage rows of the requests that brought it are written in one transaction by a worker
   thread (compressing and SQLite release the GIL; the event loop never waits for the store),
   committed before the call returns;
4. a request asking for n choices that comes back with fewer (llama.cpp ignores `n`) is
   topped up with further requests, so K samples are K samples everywhere.

`cancel()` aborts every request of the session in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import BackendResponseError
from neuron_desk.llm.cache import ResponseCache, cache_key
from neuron_desk.llm.ledger import (
    Budget,
    PriceTable,
    Usage,
    UsageLedger,
    UsageRow,
    counted_usage,
    prompt_text,
    reported_usage,
)
from neuron_desk.method.tokens import count_tokens

if TYPE_CHECKING:
    from neuron_desk.data.store import Store

logger = logging.getLogger(__name__)

COMPLETIONS = "/completions"
CHAT_COMPLETIONS = "/chat/completions"
MAX_TOP_UP_REQUESTS = 16


_SENDING: weakref.WeakKeyDictionary[Store, dict[str, asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)
"""Per store, the cache keys of requests being sent by any session over it, each with a
future that is done once that call ended (its answer cached, or not)."""


def _in_flight(store: Store) -> dict[str, asyncio.Future[None]]:
    """The requests being sent over `store`'s cache on the running loop (a new loop, as
    each CLI command runs, starts with none)."""
    loop = asyncio.get_running_loop()
    sending = _SENDING.get(store)
    if sending is None or any(f.get_loop() is not loop for f in sending.values()):
        sending = _SENDING[store] = {}
    return sending


@runtime_checkable
class EndpointBackend(Protocol):
    """What a session needs of a backend: the LLMBackend calls and a stable endpoint name."""

    endpoint_id: str

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /completions."""
        ...

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /chat/completions."""
        ...

    async def aclose(self) -> None:
        """Close connections (and stop a managed local server)."""
        ...


class LLMSession:
    """An `LLMBackend` for one run: cache, ledger, budget and cancellation over a backend."""

    def __init__(
        self,
        backend: EndpointBackend,
        *,
        store: Store | None = None,
        run: str | None = None,
        budget: Budget | None = None,
        prices: PriceTable | None = None,
        use_cache: bool = True,
        regenerate: bool = False,
        parent_ledger: UsageLedger | None = None,
    ) -> None:
        self.backend = backend
        self.endpoint = backend.endpoint_id
        self.cache = ResponseCache(store) if store is not None and use_cache else None
        self.regenerate = regenerate
        self.ledger = UsageLedger(
            run=run, budget=budget, prices=prices, store=store, parent=parent_ledger
        )
        self.responses: list[tuple[str, JSONDict, str]] = []
        """(path, body, cache key) of every request answered, in order; for provenance (the
        answers themselves are in the response cache under those keys)."""
        self.keep_responses = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"LLMSession({self.endpoint!r}, run={self.ledger.run!r})"

    @property
    def usage(self) -> Usage:
        """The run's usage so far."""
        return self.ledger.usage

    @property
    def requests_sent(self) -> int:
        """Requests that went to the endpoint (cache hits not counted)."""
        return self.ledger.usage.requests

    @property
    def in_flight(self) -> int:
        """Requests of this session not yet answered."""
        return len(self._tasks)

    def pending_tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks waiting for a request of this session (for cancelling and awaiting)."""
        return [t for t in self._tasks if not t.done()]

    def cancel(self) -> int:
        """Abort every request of this session in flight (their callers get CancelledError)."""
        tasks = self.pending_tasks()
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /completions, through the cache and the ledger."""
        return await self._call(COMPLETIONS, body, self.backend.completions)

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /chat/completions, through the cache and the ledger."""
        return await self._call(CHAT_COMPLETIONS, body, self.backend.chat_completions)

    async def _call(
        self, path: str, body: JSONDict, send: Callable[[JSONDict], Awaitable[JSONDict]]
    ) -> JSONDict:
        model = str(body.get("model", ""))
        key = cache_key(self.endpoint, path, body) if self.cache or self.keep_responses else ""
        if self.cache is not None and not self.regenerate:
            cached = self.cache.get_by_key(key)
            in_flight = _in_flight(self.cache.store)
            while cached is None and key in in_flight:
                # The same request is on its way for another call (the same explanation
                # sampled twice and scored at once): its answer, once cached, serves this
                # one as if it came a moment later. If it ends uncached (failed,
                # cancelled), this call sends its own.
                with self._in_flight_task():  # `cancel` ends the wait, not the other call
                    await asyncio.wait({in_flight[key]})
                cached = self.cache.get_by_key(key)
            if cached is not None:
                # A cached answer costs no tokens: its usage is what the server reported, if
                # anything (nothing is counted for it).
                usage = reported_usage(cached) or Usage(requests=1)
                self.ledger.record(self.endpoint, model, usage, cached=True)
                self._remember(path, body, key)
                return cached
            sending = in_flight[key] = asyncio.get_running_loop().create_future()
            try:
                return await self._send(path, body, send, model, key)
            finally:
                if in_flight.get(key) is sending:
                    del in_flight[key]
                sending.set_result(None)
        return await self._send(path, body, send, model, key)

    @contextlib.contextmanager
    def _in_flight_task(self) -> Iterator[None]:
        """The calling task counts as one of the session's in flight (`cancel` ends it)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _send(
        self,
        path: str,
        body: JSONDict,
        send: Callable[[JSONDict], Awaitable[JSONDict]],
        model: str,
        key: str,
    ) -> JSONDict:
        """Send a request the cache did not answer; cache the answer and write its usage."""
        rows: list[UsageRow] = []  # the ledger's rows of the requests sent, not yet written
        try:
            with self._in_flight_task():
                response = await self._send_counted(body, send, rows)
                wanted = body.get("n", 1)
                if isinstance(wanted, int) and wanted > 1:
                    response = await self._top_up(body, response, wanted, send, rows)
                # The answer and its usage rows go to the store in one transaction in a
                # worker thread: the event loop neither compresses nor waits for SQLite. The
                # rows are handed over (and the list emptied) before the write starts, so
                # they are written once, by the worker, even if this call is cancelled
                # meanwhile.
                handed, rows = rows, []
                if self.cache is not None:
                    await self.cache.aput(key, self.endpoint, body, response, handed)
                elif handed:
                    await asyncio.to_thread(self.ledger.write_rows, handed)
        except BaseException:
            self.ledger.write_rows(rows)  # requests sent before a failure stay on record
            raise
        self._remember(path, body, key)
        return response

    async def _send_counted(
        self,
        body: JSONDict,
        send: Callable[[JSONDict], Awaitable[JSONDict]],
        rows: list[UsageRow],
    ) -> JSONDict:
        """Send within the budget. The prompt is counted (tiktoken) beforehand only when a
        budget must hold its tokens; the answer's usage is the server's when it reports one
        and counted only when it does not (`Usage.counted_requests` says how many were). The
        usage is on the ledger at once; its store row is appended to `rows` for the caller
        to write."""
        model = str(body.get("model", ""))
        reserving = self.ledger.budgeted
        prompt_tokens = count_tokens(prompt_text(body)) if reserving else 0
        self.ledger.reserve(model, prompt_tokens)
        try:
            response = await send(body)
        finally:
            self.ledger.release(model, prompt_tokens)
        usage = reported_usage(response)
        if usage is None:
            usage = counted_usage(body, response, prompt_tokens if reserving else None)
        row = self.ledger.record(self.endpoint, model, usage, cached=False, write=False)
        if row is not None:
            rows.append(row)
        return response

    async def _top_up(
        self,
        body: JSONDict,
        response: JSONDict,
        wanted: int,
        send: Callable[[JSONDict], Awaitable[JSONDict]],
        rows: list[UsageRow],
    ) -> JSONDict:
        """Ask again until the response has `wanted` choices (for servers that ignore n)."""
        choices = list(response.get("choices") or [])
        for _ in range(MAX_TOP_UP_REQUESTS):
            if len(choices) >= wanted or not choices:
                break
            more = await self._send_counted({**body, "n": wanted - len(choices)}, send, rows)
            extra = more.get("choices")
            if not isinstance(extra, list) or not extra:
                raise BackendResponseError("the endpoint answered with no choices")
            choices.extend(extra)
        if len(choices) > wanted:
            choices = choices[:wanted]
        for index, choice in enumerate(choices):
            if isinstance(choice, dict):
                choice["index"] = index
        return {**response, "choices": choices}

    def _remember(self, path: str, body: JSONDict, key: str) -> None:
        if self.keep_responses:
            self.responses.append((path, body, key))
