"""What a run will send, before sending anything: requests, tokens, money, cache hits.

The explainer and the simulators are run against a `RecordingBackend`, which keeps every
request body and answers with empty responses, so the estimate comes from the very bodies the
real run would send (the same prompts, the same parameters). Prompt tokens are counted with
tiktoken (cl100k_base, offline); completion tokens are bounded by each request's `max_tokens`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from neuron_desk.core.backend import JSONDict, LLMBackend
from neuron_desk.core.errors import BackendResponseError, MethodError
from neuron_desk.core.model import ActivationRecord, NeuronRecord
from neuron_desk.llm.cache import ResponseCache
from neuron_desk.llm.ledger import PriceTable, prompt_text
from neuron_desk.llm.session import CHAT_COMPLETIONS, COMPLETIONS
from neuron_desk.method.calibration import UncalibratedNeuronSimulator
from neuron_desk.method.explainers import NeuronExplainer
from neuron_desk.method.pipeline import ExplainAndScoreSettings, generate_explanations
from neuron_desk.method.tokens import count_tokens

PLACEHOLDER_EXPLANATION = "words and phrases related to a particular topic in the text"
"""Stands in for explanations not written yet when estimating the scoring of new ones."""


class NotCachedError(BackendResponseError):
    """A staged batch needed a response that is not in the response cache."""


class _DryRunStop(Exception):
    """Ends a simulation whose request was recorded (nothing can be parsed from it)."""


def _empty_completion(body: JSONDict) -> JSONDict:
    return {
        "choices": [
            {"index": i, "text": "", "logprobs": {"tokens": ["0"], "top_logprobs": [{}]}}
            for i in range(int(body.get("n", 1)))
        ]
    }


def _empty_chat(body: JSONDict) -> JSONDict:
    return {
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": ""},
                "logprobs": {"content": [{"token": "", "logprob": 0.0, "top_logprobs": []}]},
            }
            for i in range(int(body.get("n", 1)))
        ]
    }


class RecordingBackend:
    """An LLMBackend that records request bodies and answers with empty responses."""

    def __init__(self, endpoint_id: str = "dry-run") -> None:
        self.endpoint_id = endpoint_id
        self.requests: list[tuple[str, JSONDict]] = []

    async def completions(self, body: JSONDict) -> JSONDict:
        """Record; an echo request stops its simulation, others get empty choices."""
        self.requests.append((COMPLETIONS, body))
        if body.get("echo"):
            raise _DryRunStop
        return _empty_completion(body)

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """Record; answer with empty choices."""
        self.requests.append((CHAT_COMPLETIONS, body))
        return _empty_chat(body)


class ReplayBackend:
    """Answers from the response cache; requests it has no answer for are recorded (and answered
    as a `RecordingBackend` does), so one pass yields what a staged batch must still send.

    `answer_hits=False` only checks the cache, answering hits as misses are (for simulations:
    their requests don't depend on earlier answers, and parsing cached ones would be wasted).
    """

    def __init__(self, endpoint_id: str, cache: ResponseCache, *, answer_hits: bool = True) -> None:
        self.endpoint_id = endpoint_id
        self.cache = cache
        self.answer_hits = answer_hits
        self.recorder = RecordingBackend(endpoint_id)
        self.answered = 0

    @property
    def missing(self) -> list[tuple[str, JSONDict]]:
        """(path, body) of the requests the cache could not answer, in order."""
        return self.recorder.requests

    async def completions(self, body: JSONDict) -> JSONDict:
        """The cached answer, else record the request."""
        cached = self._lookup(COMPLETIONS, body)
        if cached is None:
            return await self.recorder.completions(body)
        return cached

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """The cached answer, else record the request."""
        cached = self._lookup(CHAT_COMPLETIONS, body)
        if cached is None:
            return await self.recorder.chat_completions(body)
        return cached

    def _lookup(self, path: str, body: JSONDict) -> JSONDict | None:
        if not self.answer_hits:
            if not self.cache.contains(self.endpoint_id, path, body):
                return None
            self.answered += 1
            if path == COMPLETIONS and body.get("echo"):
                raise _DryRunStop
            return _empty_completion(body) if path == COMPLETIONS else _empty_chat(body)
        cached = self.cache.get(self.endpoint_id, path, body)
        if cached is not None:
            self.answered += 1
        return cached


class RefusingBackend:
    """The backend of a dry run or a staged batch: it has an endpoint's name and refuses to
    send anything (`refusal`: the error raised instead; default an AssertionError)."""

    def __init__(self, endpoint_id: str, refusal: str = "") -> None:
        self.endpoint_id = endpoint_id
        self.refusal = refusal

    def _refuse(self) -> JSONDict:
        if self.refusal:
            raise NotCachedError(self.refusal)
        raise AssertionError("a dry run sent a request")

    async def completions(self, body: JSONDict) -> JSONDict:
        """Refuse: a dry run sends nothing."""
        return self._refuse()

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """Refuse: a dry run sends nothing."""
        return self._refuse()

    async def aclose(self) -> None:
        """Nothing to close."""


@dataclass
class RunEstimate:
    """Requests and tokens of a planned run (upper bounds for completion tokens)."""

    requests: int = 0
    cached_requests: int = 0
    """Requests the response cache already answers (they cost nothing)."""
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    cost: float | None = 0.0
    """Dollars for the requests not cached (completion at its maximum); None if unpriced."""
    prompts: list[tuple[str, str]] = field(default_factory=list)
    """(label, prompt text) of a few representative requests."""
    notes: list[str] = field(default_factory=list)

    def add(self, other: RunEstimate) -> None:
        """Add another estimate to this one."""
        self.requests += other.requests
        self.cached_requests += other.cached_requests
        self.prompt_tokens += other.prompt_tokens
        self.max_completion_tokens += other.max_completion_tokens
        self.cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        self.prompts.extend(other.prompts)
        self.notes.extend(other.notes)

    def to_json(self) -> dict[str, Any]:
        """For `--dry-run --json`."""
        return {
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "requests_to_send": self.requests - self.cached_requests,
            "prompt_tokens": self.prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "cost_usd": self.cost,
            "notes": self.notes,
        }

    def describe(self) -> str:
        """A few lines for people."""
        lines = [
            f"requests: {self.requests} ({self.cached_requests} already cached, "
            f"{self.requests - self.cached_requests} to send)",
            f"prompt tokens: ~{self.prompt_tokens:,} (to send); completion tokens: at most "
            f"{self.max_completion_tokens:,}",
        ]
        lines.append(
            f"cost: at most ${self.cost:.4f}"
            if self.cost is not None
            else "cost: no price configured for this model"
        )
        lines.extend(self.notes)
        return "\n".join(lines)


def estimate_requests(
    requests: Sequence[tuple[str, JSONDict]],
    *,
    endpoint: str = "",
    cache: ResponseCache | None = None,
    prices: PriceTable | None = None,
    label: str = "request",
    sample_prompts: int = 1,
) -> RunEstimate:
    """Count the requests, their prompt tokens and cost; cached ones cost nothing."""
    estimate = RunEstimate()
    cost = 0.0
    priced = True
    seen: dict[str, int] = {}
    for path, body in requests:
        estimate.requests += 1
        if cache is not None and cache.contains(endpoint, path, body):
            estimate.cached_requests += 1
            continue
        text = prompt_text(body)
        tokens = seen.get(text) or count_tokens(text)
        seen[text] = tokens
        completion = int(body.get("max_tokens") or 0) * int(body.get("n", 1))
        estimate.prompt_tokens += tokens
        estimate.max_completion_tokens += completion
        price = (prices or PriceTable()).cost(str(body.get("model", "")), tokens, completion)
        if price is None:
            priced = False
        else:
            cost += price
        if len(estimate.prompts) < sample_prompts:
            estimate.prompts.append((label, text))
    estimate.cost = cost if priced else None
    return estimate


def scoring_records(
    record: NeuronRecord,
    settings: ExplainAndScoreSettings,
    on: Sequence[ActivationRecord] | None = None,
) -> list[ActivationRecord]:
    """The sequences a scoring run simulates: calibration ones (if calibrated) and valid ones
    (or the records `on`, e.g. the user's own text)."""
    records = list(record.valid_activation_records(settings.slices) if on is None else on)
    if settings.calibration is not UncalibratedNeuronSimulator:
        records = list(record.calibration_activation_records(settings.slices)) + records
    return records


async def record_scoring(
    records: Sequence[ActivationRecord],
    explanation: str,
    make_factory: Callable[[LLMBackend], Callable[[str], Any]],
    endpoint: str = "dry-run",
    backend: RecordingBackend | ReplayBackend | None = None,
) -> list[tuple[str, JSONDict]]:
    """The requests scoring `explanation` on `records` would send (those `backend`, a replay
    of the cache, cannot answer)."""
    backend = backend or RecordingBackend(endpoint)
    make_simulator = make_factory(backend)
    for activation_record in records:
        simulator = make_simulator(explanation)
        with contextlib.suppress(_DryRunStop, MethodError, BackendResponseError):
            await simulator.simulate(activation_record.tokens)
    return backend.missing if isinstance(backend, ReplayBackend) else backend.requests


async def record_explaining(
    record: NeuronRecord,
    make_explainer: Callable[[LLMBackend], NeuronExplainer],
    settings: ExplainAndScoreSettings,
    backend: RecordingBackend | ReplayBackend | None = None,
) -> tuple[list[tuple[str, JSONDict]], list[str]]:
    """The request generating explanations for `record` would send (unless `backend`, a replay
    of the cache, answers it), and the explanations a replay's cached answer holds."""
    backend = backend or RecordingBackend()
    texts = await generate_explanations(record, make_explainer(backend), settings)
    if isinstance(backend, ReplayBackend):
        return backend.missing, texts
    return backend.requests, texts
