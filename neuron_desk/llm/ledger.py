"""Token usage, prices and budgets.

Each request's usage comes from the response's `usage` object when the endpoint sends one
(nothing is counted then), else it is counted with tiktoken (`method.tokens.count_tokens`,
cl100k_base, offline; `Usage.counted_requests` says how many were). A prompt is counted before
it is sent only when a budget has to hold its tokens. A ledger sums a run's usage, writes every
request to the store's `usage` table (so totals across runs are kept) and enforces a budget: a
request that would take the run over its token or money cap is refused with `BudgetExceeded`
before it is sent, and so is every later one.

Prompt tokens a provider served from its prefix cache (`usage.prompt_tokens_details.
cached_tokens`) are recorded apart and priced at the model's cached rate; requests answered by
a staged batch (`runs.staged`) are recorded as such and priced at the batch rates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import BudgetExceeded
from neuron_desk.method.tokens import count_tokens

if TYPE_CHECKING:
    from neuron_desk.data.store import Store


@dataclass
class Usage:
    """Tokens and requests: of one request, of a run, or of all runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Requests sent to the endpoint."""
    cached_requests: int = 0
    """Requests answered from the response cache (their tokens are not counted above)."""
    counted: bool = False
    """Whether some token counts were estimated with tiktoken (no `usage` in the response)."""
    cached_prompt_tokens: int = 0
    """Of `prompt_tokens`, those the provider served from its prefix cache."""
    counted_requests: int = 0
    """Of `requests`, those whose tokens were counted with tiktoken (the server reported no
    usage); the others' are the server's own report, which is never counted again."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        """Add another usage to this one."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests
        self.cached_requests += other.cached_requests
        self.counted = self.counted or other.counted
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.counted_requests += other.counted_requests

    def to_json(self) -> dict[str, Any]:
        """A JSON object for provenance and `--json` output."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "estimated": self.counted,
            "counted_requests": self.counted_requests,
        }


BATCH_DISCOUNT = 0.5
"""What a batch API charges of the online price when no batch rate is configured (OpenAI: 50%)."""


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens: online, prefix-cached prompt, and batch rates.

    A rate left None falls back: cached prompt tokens to the prompt rate, batch rates to
    `BATCH_DISCOUNT` times the online ones.
    """

    prompt: float
    completion: float
    cached_prompt: float | None = None
    batch_prompt: float | None = None
    batch_completion: float | None = None

    def rates(self, *, batch: bool = False) -> tuple[float, float, float]:
        """(prompt, cached prompt, completion) dollars per million tokens."""
        cached = self.prompt if self.cached_prompt is None else self.cached_prompt
        if not batch:
            return self.prompt, cached, self.completion
        prompt = (
            self.batch_prompt if self.batch_prompt is not None else self.prompt * BATCH_DISCOUNT
        )
        completion = (
            self.batch_completion
            if self.batch_completion is not None
            else self.completion * BATCH_DISCOUNT
        )
        return prompt, min(cached, prompt), completion

    def to_json(self) -> dict[str, float]:
        """The rates as written to the profiles file (unset ones left out)."""
        data = {"prompt": self.prompt, "completion": self.completion}
        for name in ("cached_prompt", "batch_prompt", "batch_completion"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Price:
        """Rates from the profiles file (prompt and completion required, the rest optional)."""

        def optional(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(
            float(data.get("prompt", 0)),
            float(data.get("completion", 0)),
            optional("cached_prompt"),
            optional("batch_prompt"),
            optional("batch_completion"),
        )


@dataclass
class PriceTable:
    """Prices by model name: exact, else the longest configured prefix ("gpt-4o" for "gpt-4o-1")."""

    _prices: dict[str, Price] = field(default_factory=dict)

    def set(self, model: str, price: Price) -> None:
        """Set the price of a model."""
        self._prices[model] = price

    def items(self) -> Iterator[tuple[str, Price]]:
        """(model, price) pairs."""
        return iter(self._prices.items())

    def get(self, model: str) -> Price | None:
        """The price of `model`, or None when none is configured."""
        if model in self._prices:
            return self._prices[model]
        prefixes = [m for m in self._prices if model.startswith(m)]
        return self._prices[max(prefixes, key=len)] if prefixes else None

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_prompt_tokens: int = 0,
        batch: bool = False,
    ) -> float | None:
        """Dollars for these tokens (`cached_prompt_tokens` of the prompt at the cached rate,
        all at batch rates if `batch`), or None when the model has no price."""
        price = self.get(model)
        if price is None:
            return None
        prompt, cached, completion = price.rates(batch=batch)
        cached_prompt_tokens = min(cached_prompt_tokens, prompt_tokens)
        return (
            (prompt_tokens - cached_prompt_tokens) * prompt
            + cached_prompt_tokens * cached
            + completion_tokens * completion
        ) / 1e6


@dataclass(frozen=True)
class Budget:
    """Caps for one run; None means no cap."""

    max_tokens: int | None = None
    max_cost: float | None = None

    def describe(self) -> str:
        """The caps in words."""
        parts = []
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens:,} tokens")
        if self.max_cost is not None:
            parts.append(f"${self.max_cost:.2f}")
        return " and ".join(parts) or "no cap"


def prompt_text(body: JSONDict) -> str:
    """The text a request sends to the model (prompt, or every message's content)."""
    if "messages" in body:
        return "\n".join(str(m.get("content") or "") for m in body.get("messages") or [])
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))


def completion_text(response: JSONDict) -> str:
    """The text the model generated, over all choices (echoed prompts left out)."""
    parts = []
    for choice in response.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def usage_of(body: JSONDict, response: JSONDict) -> Usage:
    """One request's usage: the response's `usage` if present, else counted with tiktoken."""
    return reported_usage(response) or counted_usage(body, response)


def reported_usage(response: JSONDict) -> Usage | None:
    """The usage the server reported in the response (prompt and completion tokens), or None."""
    reported = response.get("usage")
    if isinstance(reported, dict):
        prompt = reported.get("prompt_tokens")
        completion = reported.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            cached = cached_tokens(reported)
            return Usage(prompt, completion, requests=1, cached_prompt_tokens=cached)
    return None


def counted_usage(body: JSONDict, response: JSONDict, prompt_tokens: int | None = None) -> Usage:
    """A request's usage counted with tiktoken (for a response without `usage`); the prompt's
    count may be given when it was counted already (for the budget)."""
    if prompt_tokens is None:
        prompt_tokens = count_tokens(prompt_text(body))
    text = completion_text(response)
    if body.get("echo") and isinstance(body.get("prompt"), str):
        text = text.removeprefix(body["prompt"])
    return Usage(prompt_tokens, count_tokens(text), requests=1, counted=True, counted_requests=1)


def cached_tokens(usage: JSONDict) -> int:
    """`prompt_tokens_details.cached_tokens` of a response's usage (0 when not reported)."""
    details = usage.get("prompt_tokens_details")
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


class UsageLedger:
    """One run's usage, written through to the store, with an optional budget."""

    def __init__(
        self,
        *,
        run: str | None = None,
        budget: Budget | None = None,
        prices: PriceTable | None = None,
        store: Store | None = None,
        parent: UsageLedger | None = None,
    ) -> None:
        """`parent`: a run's ledger that also sees (and budgets) this part's requests."""
        self.run = run
        self.parent = parent
        self.budget = budget or Budget()
        self.prices = prices or PriceTable()
        self.store = store
        self.usage = Usage()
        self.by_model: dict[str, Usage] = {}
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self.exceeded: str | None = None
        """Why the budget stopped the run, once it has."""

    @property
    def cost(self) -> float | None:
        """Dollars spent in this run (None if a model used has no price)."""
        total = 0.0
        for model, usage in self.by_model.items():
            if usage.requests == 0:
                continue
            cost = self.prices.cost(
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                cached_prompt_tokens=usage.cached_prompt_tokens,
            )
            if cost is None:
                return None
            total += cost
        return total

    @property
    def budgeted(self) -> bool:
        """Whether this ledger or a parent has a token or money cap (requests then hold their
        prompt's tokens before they are sent, which needs a count)."""
        budget = self.budget
        capped = budget.max_tokens is not None or budget.max_cost is not None
        return capped or (self.parent is not None and self.parent.budgeted)

    def reserve(self, model: str, prompt_tokens: int) -> None:
        """Hold `prompt_tokens` of the budget for a request about to be sent, or refuse it."""
        if self.exceeded is not None:
            raise BudgetExceeded(self.exceeded)
        if self.parent is not None:
            self.parent.reserve(model, prompt_tokens)
        try:
            self._reserve(model, prompt_tokens)
        except BudgetExceeded:
            if self.parent is not None:
                self.parent.release(model, prompt_tokens)
            raise

    def _reserve(self, model: str, prompt_tokens: int) -> None:
        budget = self.budget
        if budget.max_tokens is not None:
            planned = self.usage.total_tokens + self._reserved_tokens + prompt_tokens
            if planned > budget.max_tokens:
                self._stop(
                    f"the run's budget of {budget.max_tokens:,} tokens is reached "
                    f"({self.usage.total_tokens:,} spent; the next request needs "
                    f"~{prompt_tokens:,} more)"
                )
        if budget.max_cost is not None:
            price = self.prices.cost(model, prompt_tokens, 0)
            spent = self.cost
            if price is None or spent is None:
                self._stop(f"a money budget is set but model {model!r} has no price configured")
            else:
                if spent + self._reserved_cost + price > budget.max_cost:
                    self._stop(
                        f"the run's budget of ${budget.max_cost:.4f} is reached "
                        f"(${spent:.4f} spent; the next request costs ~${price:.4f})"
                    )
                self._reserved_cost += price
        self._reserved_tokens += prompt_tokens

    def release(self, model: str, prompt_tokens: int) -> None:
        """Give back a reservation (the request finished or failed)."""
        self._reserved_tokens -= prompt_tokens
        if self.budget.max_cost is not None:
            self._reserved_cost -= self.prices.cost(model, prompt_tokens, 0) or 0.0
        if self.parent is not None:
            self.parent.release(model, prompt_tokens)

    def record(
        self, endpoint: str, model: str, usage: Usage, *, cached: bool, write: bool = True
    ) -> UsageRow | None:
        """Add a request's usage (a cached answer counts as a cached request, no tokens).

        `write=False` leaves the store alone and returns the row to write (None when this
        ledger writes nothing): the session writes it with the cached answer, in one
        transaction off the event loop."""
        entry = Usage(cached_requests=1) if cached else usage
        self.usage.add(entry)
        self.by_model.setdefault(model, Usage()).add(entry)
        if self.parent is not None:
            self.parent.record(endpoint, model, usage, cached=cached)
        if self.store is None or self.store.read_only:
            return None
        row = usage_row(self.run, endpoint, model, usage, cached=cached)
        if write:
            with self.store.transaction() as db:
                insert_usage_rows(db, [row])
            return None
        return row

    def write_rows(self, rows: list[UsageRow]) -> None:
        """Write rows `record(..., write=False)` returned (in a transaction of their own)."""
        if rows and self.store is not None and not self.store.read_only:
            with self.store.transaction() as db:
                insert_usage_rows(db, rows)

    def _stop(self, reason: str) -> None:
        self.exceeded = reason
        raise BudgetExceeded(reason)


def record_usage(
    store: Store,
    run: str | None,
    endpoint: str,
    model: str,
    usage: Usage,
    *,
    cached: bool = False,
) -> None:
    """Write one request's usage to the `usage` table."""
    _insert_usages(store, run, endpoint, [(model, usage)], cached=cached, batch=False)


def record_usages(
    store: Store,
    run: str | None,
    endpoint: str,
    usages: list[tuple[str, Usage]],
    *,
    batch: bool = False,
) -> None:
    """Write many requests' (model, usage) at once (`batch`: answered by a staged batch)."""
    _insert_usages(store, run, endpoint, usages, cached=False, batch=batch)


UsageRow = tuple[Any, ...]
"""One row of the `usage` table, as `insert_usage_rows` writes it."""

_INSERT_USAGE = (
    "INSERT INTO usage (run, endpoint, model, prompt_tokens, completion_tokens, "
    "cached, created_at, cached_prompt_tokens, batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def usage_row(
    run: str | None,
    endpoint: str,
    model: str,
    usage: Usage,
    *,
    cached: bool = False,
    batch: bool = False,
    now: float | None = None,
) -> UsageRow:
    """The `usage` row of one request (timed now unless `now` is given)."""
    return (
        run,
        endpoint,
        model,
        usage.prompt_tokens,
        usage.completion_tokens,
        int(cached),
        time.time() if now is None else now,
        usage.cached_prompt_tokens,
        int(batch),
    )


def insert_usage_rows(db: Any, rows: list[UsageRow]) -> None:
    """Write `usage` rows inside a transaction the caller holds (`Store.transaction()`)."""
    db.executemany(_INSERT_USAGE, rows)


def _insert_usages(
    store: Store,
    run: str | None,
    endpoint: str,
    usages: list[tuple[str, Usage]],
    *,
    cached: bool,
    batch: bool,
) -> None:
    now = time.time()
    rows = [
        usage_row(run, endpoint, model, usage, cached=cached, batch=batch, now=now)
        for model, usage in usages
    ]
    with store.transaction() as db:
        insert_usage_rows(db, rows)


@dataclass(frozen=True)
class UsageTotal:
    """Requests and tokens of one endpoint and model (cached requests cost no tokens)."""

    endpoint: str
    model: str
    requests: int
    cached_requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    """Of `prompt_tokens`, those served from the provider's prefix cache."""
    batch_requests: int = 0
    """Of `requests`, those answered by a staged batch (batch prices)."""
    batch: Usage = field(default_factory=Usage)
    """The tokens of the batch requests (included in the totals above)."""

    def cost(self, prices: PriceTable) -> float | None:
        """Dollars: online requests at online rates, staged ones at batch rates."""
        batch = self.batch
        online = prices.cost(
            self.model,
            self.prompt_tokens - batch.prompt_tokens,
            self.completion_tokens - batch.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens - batch.cached_prompt_tokens,
        )
        staged = prices.cost(
            self.model,
            batch.prompt_tokens,
            batch.completion_tokens,
            cached_prompt_tokens=batch.cached_prompt_tokens,
            batch=True,
        )
        return None if online is None or staged is None else online + staged


def usage_totals(store: Store, run: str | None = None) -> list[UsageTotal]:
    """Totals per endpoint and model from the `usage` table, of one run or of all."""
    where, params = ("WHERE run=?", (run,)) if run is not None else ("", ())
    sent = "CASE WHEN cached THEN 0 ELSE {} END"
    staged = "CASE WHEN batch THEN {} ELSE 0 END"
    rows = store.query(
        "SELECT endpoint, model, SUM(1 - cached), SUM(cached), "
        f"SUM({sent.format('prompt_tokens')}), SUM({sent.format('completion_tokens')}), "
        f"SUM({sent.format('cached_prompt_tokens')}), SUM(batch), "
        f"SUM({staged.format('prompt_tokens')}), SUM({staged.format('completion_tokens')}), "
        f"SUM({staged.format('cached_prompt_tokens')}) "
        f"FROM usage {where} GROUP BY endpoint, model ORDER BY endpoint, model",
        params,
    )
    return [
        UsageTotal(
            str(e),
            str(m),
            int(s),
            int(c),
            int(p),
            int(o),
            int(k),
            int(b),
            Usage(int(bp), int(bc), requests=int(b), cached_prompt_tokens=int(bk)),
        )
        for e, m, s, c, p, o, k, b, bp, bc, bk in rows
    ]
