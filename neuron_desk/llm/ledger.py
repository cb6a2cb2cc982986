"""Token usage, prices and budgets.

Each request's usage comes from the response's `usage` object when the endpoint sends one,
else it is counted with tiktoken (`method.tokens.count_tokens`, cl100k_base, offline). A
ledger sums a run's usage, writes every request to the store's `usage` table (so totals across
runs are kept) and enforces a budget: a request that would take the run over its token or
money cap is refused with `BudgetExceeded` before it is sent, and so is every later one.
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

    def to_json(self) -> dict[str, Any]:
        """A JSON object for provenance and `--json` output."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "estimated": self.counted,
        }


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    prompt: float
    completion: float


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

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Dollars for these tokens, or None when the model has no price."""
        price = self.get(model)
        if price is None:
            return None
        return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6


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
    reported = response.get("usage")
    if isinstance(reported, dict):
        prompt = reported.get("prompt_tokens")
        completion = reported.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return Usage(prompt, completion, requests=1)
    prompt_tokens = count_tokens(prompt_text(body))
    text = completion_text(response)
    if body.get("echo") and isinstance(body.get("prompt"), str):
        text = text.removeprefix(body["prompt"])
    return Usage(prompt_tokens, count_tokens(text), requests=1, counted=True)


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
            cost = self.prices.cost(model, usage.prompt_tokens, usage.completion_tokens)
            if cost is None:
                return None
            total += cost
        return total

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

    def record(self, endpoint: str, model: str, usage: Usage, *, cached: bool) -> None:
        """Add a request's usage (a cached answer counts as a cached request, no tokens)."""
        entry = Usage(cached_requests=1) if cached else usage
        self.usage.add(entry)
        self.by_model.setdefault(model, Usage()).add(entry)
        if self.parent is not None:
            self.parent.record(endpoint, model, usage, cached=cached)
        if self.store is not None and not self.store.read_only:
            with self.store.transaction() as db:
                db.execute(
                    "INSERT INTO usage (run, endpoint, model, prompt_tokens, completion_tokens, "
                    "cached, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.run,
                        endpoint,
                        model,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        int(cached),
                        time.time(),
                    ),
                )

    def _stop(self, reason: str) -> None:
        self.exceeded = reason
        raise BudgetExceeded(reason)


@dataclass(frozen=True)
class UsageTotal:
    """Requests and tokens of one endpoint and model (cached requests cost no tokens)."""

    endpoint: str
    model: str
    requests: int
    cached_requests: int
    prompt_tokens: int
    completion_tokens: int


def usage_totals(store: Store, run: str | None = None) -> list[UsageTotal]:
    """Totals per endpoint and model from the `usage` table, of one run or of all."""
    where, params = ("WHERE run=?", (run,)) if run is not None else ("", ())
    rows = store.query(
        "SELECT endpoint, model, SUM(1 - cached), SUM(cached), "
        "SUM(CASE WHEN cached THEN 0 ELSE prompt_tokens END), "
        "SUM(CASE WHEN cached THEN 0 ELSE completion_tokens END) "
        f"FROM usage {where} GROUP BY endpoint, model ORDER BY endpoint, model",
        params,
    )
    return [
        UsageTotal(str(e), str(m), int(s), int(c), int(p), int(o)) for e, m, s, c, p, o in rows
    ]
