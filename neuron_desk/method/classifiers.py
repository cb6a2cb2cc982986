"""Second-opinion scorers, as EleutherAI's delphi has them: detection and fuzzing.

Both need only chat completions. The model sees excerpts in batches and answers a list of 0/1:

- detection: does this excerpt activate the neuron? Activating excerpts (the top records and
  the quantile buckets) are mixed with random ones (whose maximum is below a tenth of the
  neuron's maximum); the truth is "activating or not".
- fuzzing: are the marked tokens the ones that activate? Activating excerpts are shown with
  their activating tokens marked `<<like this>>` (half of them) or with as many other tokens
  marked (the other half); the truth is "marked correctly or not".

Reported: balanced accuracy, precision, recall, F1 and, where the endpoint returns logprobs for
the answer's digits, the ROC AUC of P("1") (scikit-learn's metrics). Defaults follow delphi's:
50 activating and 50 other excerpts, 5 a prompt, i.e. 20 requests a neuron for each scorer.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from neuron_desk.core.backend import JSONDict, LLMBackend
from neuron_desk.core.errors import BackendResponseError, MethodError
from neuron_desk.core.model import ActivationRecord, NeuronRecord
from neuron_desk.method.default_backend import deferred_default_backend

SCORERS = ("simulation", "detection", "fuzzing")
"""The names of the scorers (`score --scorer`)."""

DETECTION_SYSTEM = (
    "You are a careful researcher studying a neuron of a language model. You get a short "
    "explanation of what the neuron responds to, then numbered text excerpts. For each excerpt, "
    "in order, answer 1 if the neuron would activate on some token of it and 0 if not. Answer "
    "with a Python list of 0s and 1s only, one per excerpt, e.g. [1,0,0,1,0]."
)
FUZZING_SYSTEM = (
    "You are a careful researcher studying a neuron of a language model. You get a short "
    "explanation of what the neuron responds to, then numbered text excerpts in which some "
    "tokens are marked <<like this>>. For each excerpt, in order, answer 1 if the marked tokens "
    "are the ones the explanation says the neuron activates on and 0 if they are not. Answer "
    "with a Python list of 0s and 1s only, one per excerpt, e.g. [1,0,0,1,0]."
)


@dataclass
class ClassifierSettings:
    """How many excerpts, how many a prompt (delphi's defaults), and the sampling seed."""

    n_activating: int = 50
    n_other: int = 50
    batch_size: int = 5
    activation_threshold: float = 0.1
    """Share of the neuron's maximum above which a token counts as activating (fuzzing)."""
    seed: int = 22

    def requests(self, record: NeuronRecord, scorer: str) -> int:
        """How many requests a scorer sends for `record` (the estimate shown first)."""
        n = len(_examples(record, scorer, self))
        return -(-n // self.batch_size)


@dataclass
class Excerpt:
    """One excerpt shown to the model, and the right answer for it."""

    text: str
    label: bool
    kind: str
    """"top", "quantile" or "random" (detection); "correct" or "wrong" marks (fuzzing)."""


@dataclass
class ClassifierResult:
    """A detection or fuzzing score: its metrics, the answers, and what was missing."""

    scorer: str
    explanation: str
    model: str
    balanced_accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    auc: float | None
    n_excerpts: int
    n_answered: int
    n_requests: int
    missing: list[str] = field(default_factory=list)
    """Batches whose answer could not be read (their excerpts are left out), and why."""
    auc_source: str = "none"
    """"logprobs" where P("1") came from the answer's digit logprobs; "none" otherwise."""
    answers: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The headline numbers, for provenance, JSON output and the app."""
        return {
            "scorer": self.scorer,
            "balanced_accuracy": self.balanced_accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "auc": self.auc,
            "auc_source": self.auc_source,
            "n_excerpts": self.n_excerpts,
            "n_answered": self.n_answered,
            "n_requests": self.n_requests,
            "missing_batches": len(self.missing),
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, for the store."""
        return asdict(self)

    def get_preferred_score(self) -> float | None:
        """The headline: balanced accuracy."""
        return self.balanced_accuracy


def _text(tokens: Sequence[str]) -> str:
    return "".join(tokens).replace("\n", "\\n")


def _marked(record: ActivationRecord, marked: set[int]) -> str:
    return _text([f"<<{t}>>" if i in marked else t for i, t in enumerate(record.tokens)])


def _examples(record: NeuronRecord, scorer: str, settings: ClassifierSettings) -> list[Excerpt]:
    rng = random.Random(settings.seed)
    top = list(record.most_positive_activation_records)
    quantiles = [r for bucket in record.random_sample_by_quantile or [] for r in bucket]
    activating = [(r, "top") for r in top] + [(r, "quantile") for r in quantiles]
    rng.shuffle(activating)
    activating = activating[: settings.n_activating]
    maximum = record.max_activation
    if scorer == "detection":
        limit = settings.activation_threshold * maximum
        others = [r for r in record.random_sample if max(r.activations, default=0.0) < limit]
        rng.shuffle(others)
        out = [Excerpt(_text(r.tokens), True, kind) for r, kind in activating]
        out += [Excerpt(_text(r.tokens), False, "random") for r in others[: settings.n_other]]
    elif scorer == "fuzzing":
        out = []
        threshold = settings.activation_threshold * maximum
        usable = [(r, k) for r, k in activating if max(r.activations, default=0.0) > threshold]
        usable = usable[: settings.n_activating]
        for index, (r, _) in enumerate(usable):
            hot = {i for i, a in enumerate(r.activations) if a > threshold}
            if index % 2 == 0:
                out.append(Excerpt(_marked(r, hot), True, "correct"))
            else:
                cold = [i for i in range(len(r.tokens)) if i not in hot]
                wrong = set(rng.sample(cold, min(len(hot), len(cold))))
                out.append(Excerpt(_marked(r, wrong), False, "wrong"))
    else:
        raise MethodError(f"unknown scorer {scorer!r}: {', '.join(SCORERS)}")
    rng.shuffle(out)
    return out


_LIST = re.compile(r"\[\s*([01](?:\s*,\s*[01])*)\s*\]")


def parse_answer(response: JSONDict, n: int) -> tuple[list[int], list[float] | None]:
    """The 0/1 list of a chat answer, and P("1") per item where digit logprobs are given."""
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise BackendResponseError("the answer must have exactly one choice")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise BackendResponseError("the answer has no message content")
    found = _LIST.findall(content)
    if not found:
        raise MethodError(f"no list of 0/1 in the answer: {content[:80]!r}")
    values = [int(v) for v in json.loads(f"[{found[-1]}]")]
    if len(values) != n:
        raise MethodError(f"the answer lists {len(values)} values for {n} excerpts")
    return values, _digit_probabilities(choices[0].get("logprobs"), n)


def _digit_probabilities(logprobs: Any, n: int) -> list[float] | None:
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(entries, list):
        return None
    out: list[float] = []
    for entry in entries:
        if not isinstance(entry, dict) or str(entry.get("token", "")).strip() not in ("0", "1"):
            continue
        mass = {"0": 0.0, "1": 0.0}
        for alt in entry.get("top_logprobs") or []:
            token = str(alt.get("token", "")).strip() if isinstance(alt, dict) else ""
            logprob = alt.get("logprob") if isinstance(alt, dict) else None
            if token in mass and isinstance(logprob, int | float) and math.isfinite(logprob):
                mass[token] += math.exp(logprob)
        total = mass["0"] + mass["1"]
        if total <= 0:
            return None
        out.append(mass["1"] / total)
    return out if len(out) == n else None


class ClassifierScorer:
    """Scores an explanation by detection or fuzzing through a chat backend."""

    def __init__(
        self,
        scorer: str,
        model_name: str,
        *,
        backend: LLMBackend | None = None,
        settings: ClassifierSettings | None = None,
        max_concurrent: int | None = 10,
        logprobs: bool = True,
    ) -> None:
        if scorer not in ("detection", "fuzzing"):
            raise MethodError(f"unknown classifier scorer {scorer!r}: detection or fuzzing")
        self.scorer = scorer
        self.model_name = model_name
        self.settings = settings or ClassifierSettings()
        self.logprobs = logprobs
        self._backend = backend
        self._semaphore = asyncio.Semaphore(max_concurrent or 1_000_000)

    @property
    def backend(self) -> LLMBackend:
        """The backend passed, else the default profile's."""
        if self._backend is None:
            self._backend = deferred_default_backend()
        return self._backend

    def prompts(self, record: NeuronRecord, explanation: str) -> list[list[dict[str, str]]]:
        """The chat messages of every batch."""
        examples = _examples(record, self.scorer, self.settings)
        size = self.settings.batch_size
        return [
            self._messages(explanation, examples[i : i + size])
            for i in range(0, len(examples), size)
        ]

    def _messages(self, explanation: str, batch: Sequence[Excerpt]) -> list[dict[str, str]]:
        system = DETECTION_SYSTEM if self.scorer == "detection" else FUZZING_SYSTEM
        lines = "\n".join(f"Excerpt {i}: {e.text}" for i, e in enumerate(batch))
        user = f"Explanation: {explanation.strip()}\n\nExcerpts:\n\n{lines}\n"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def score(self, record: NeuronRecord, explanation: str) -> ClassifierResult:
        """Ask about every batch; metrics over the excerpts answered."""
        if not explanation.strip():
            raise MethodError("an explanation to score must not be empty")
        examples = _examples(record, self.scorer, self.settings)
        size = self.settings.batch_size
        batches = [examples[i : i + size] for i in range(0, len(examples), size)]
        answers = await asyncio.gather(*(self._ask(explanation, b) for b in batches))
        truth: list[int] = []
        predicted: list[int] = []
        probabilities: list[float] | None = []
        missing: list[str] = []
        rows: list[dict[str, Any]] = []
        for index, (batch, answer) in enumerate(zip(batches, answers, strict=True)):
            if isinstance(answer, str):
                missing.append(f"batch {index}: {answer}")
                continue
            values, p_one = answer
            truth += [int(e.label) for e in batch]
            predicted += values
            if probabilities is not None and p_one is not None:
                probabilities += p_one
            else:
                probabilities = None
            rows += [
                {"kind": e.kind, "label": int(e.label), "answer": v}
                for e, v in zip(batch, values, strict=True)
            ]
        if len(missing) * 2 > len(batches):
            raise MethodError(
                f"{self.scorer}: {len(missing)} of {len(batches)} answers unreadable "
                f"({missing[0] if missing else ''})"
            )
        return self._result(
            explanation, examples, truth, predicted, probabilities, missing, rows, len(batches)
        )

    async def _ask(
        self, explanation: str, batch: Sequence[Excerpt]
    ) -> tuple[list[int], list[float] | None] | str:
        body: JSONDict = {
            "model": self.model_name,
            "messages": self._messages(explanation, batch),
            "temperature": 0,
            "max_tokens": 8 + 4 * len(batch),
        }
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 5
        async with self._semaphore:
            response = await self.backend.chat_completions(body)
        try:
            return parse_answer(response, len(batch))
        except (MethodError, BackendResponseError) as exc:
            return str(exc)

    def _result(
        self,
        explanation: str,
        examples: Sequence[Excerpt],
        truth: list[int],
        predicted: list[int],
        probabilities: list[float] | None,
        missing: list[str],
        rows: list[dict[str, Any]],
        requests: int,
    ) -> ClassifierResult:
        from sklearn import metrics  # ~1 s to import: only when a classifier scores

        both = len(set(truth)) == 2
        auc = None
        if probabilities is not None and both and len(probabilities) == len(truth):
            auc = float(metrics.roc_auc_score(truth, probabilities))
        zero: Any = 0.0
        return ClassifierResult(
            scorer=self.scorer,
            explanation=explanation,
            model=self.model_name,
            balanced_accuracy=(
                float(metrics.balanced_accuracy_score(truth, predicted)) if both else None
            ),
            precision=float(metrics.precision_score(truth, predicted, zero_division=zero))
            if truth
            else None,
            recall=float(metrics.recall_score(truth, predicted, zero_division=zero))
            if truth
            else None,
            f1=float(metrics.f1_score(truth, predicted, zero_division=zero)) if truth else None,
            auc=auc,
            n_excerpts=len(examples),
            n_answered=len(truth),
            n_requests=requests,
            missing=missing,
            auc_source="logprobs" if auc is not None else "none",
            answers=rows,
        )
