"""Explain and score one neuron on one endpoint, with provenance, for the CLI and the app.

A `NeuronRun` ties together a backend (one per profile, shared), the store (cache, ledger,
capabilities, results), the simulator choice and the method's pipeline. Every result is
stored with its provenance: endpoint (base URL, never the key), profile, models, method and
why it was chosen, parameters, token usage and cost, time, and the cache keys of the requests
(the raw responses stay in the response cache under those keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from neuron_desk import __version__
from neuron_desk.core import codec
from neuron_desk.core.backend import LLMBackend
from neuron_desk.core.errors import BudgetExceeded, MethodError
from neuron_desk.core.model import (
    ActivationRecord,
    NeuronRecord,
    ScoredExplanation,
    SimulatorMethod,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.scores import best_first
from neuron_desk.data.explanations import Explanations
from neuron_desk.llm.cache import ResponseCache
from neuron_desk.llm.capabilities import (
    Capabilities,
    SimulatorChoice,
    capabilities_for,
    choose_simulator,
    known_capabilities,
    method_name,
    simulator_factory,
)
from neuron_desk.llm.ledger import PriceTable, Usage, UsageLedger
from neuron_desk.llm.session import EndpointBackend, LLMSession
from neuron_desk.method.classifiers import ClassifierResult, ClassifierScorer, ClassifierSettings
from neuron_desk.method.explainers import TokenActivationPairExplainer
from neuron_desk.method.pipeline import (
    SimulatorFactory,
    generate_explanations,
    score_explanation,
)
from neuron_desk.method.prompts import PromptFormat
from neuron_desk.method.simulators import SOURCE_WRITTEN, count_sources
from neuron_desk.runs.estimate import (
    PLACEHOLDER_EXPLANATION,
    RunEstimate,
    estimate_requests,
    record_explaining,
    record_scoring,
    scoring_records,
)
from neuron_desk.runs.options import RunOptions

if TYPE_CHECKING:
    from neuron_desk.data.store import Store


ASSUMED_CAPABILITIES = Capabilities(
    completions=True, prompt_logprobs=True, prompt_top_logprobs=15, chat=True, chat_top_logprobs=20
)
"""What a forced simulator assumes of an endpoint never probed."""


_CALL_SESSIONS: ContextVar[list[LLMSession] | None] = ContextVar("run_call", default=None)
"""The sessions of the current `score`/`explain` call (shared by its gathered tasks)."""


@dataclass
class ScoreOutcome:
    """One explanation with its score (None when it could not be scored) and provenance."""

    explanation: str
    scored: ScoredExplanation | None
    method: SimulatorMethod | None
    model: str
    sequences: int
    usage: Usage
    provenance: dict[str, Any]
    stored_id: int | None = None

    def preferred_score(self) -> float | None:
        """The headline score (correlation); None when unscored or undefined."""
        return self.scored.get_preferred_score() if self.scored is not None else None

    def to_json(self) -> dict[str, Any]:
        """What `score --json` and `explain --json` print."""
        simulation = self.scored.scored_simulation if self.scored is not None else None
        missing = 0
        if simulation is not None:
            missing = sum(
                len(s.simulation.missing_positions) for s in simulation.scored_sequence_simulations
            )
        return {
            "explanation": self.explanation,
            "score": simulation.ev_correlation_score if simulation else None,
            "rsquared": simulation.rsquared_score if simulation else None,
            "absolute_dev_explained": (
                simulation.absolute_dev_explained_score if simulation else None
            ),
            "method": self.method.value if self.method else None,
            "model": self.model,
            "endpoint": self.provenance.get("endpoint"),
            "sequences": self.sequences,
            "missing_positions": missing,
            "scorer": self.provenance.get("scorer", "simulation"),
            "value_sources": self.provenance.get("value_sources"),
            "requests": self.usage.requests,
            "cached_requests": self.usage.cached_requests,
            "usage": self.usage.to_json(),
            "cost_usd": self.provenance.get("cost_usd"),
            "stored_id": self.stored_id,
            "note": self.provenance.get("note"),
        }


@dataclass
class ClassifierOutcome:
    """A detection or fuzzing score of one explanation, with provenance."""

    explanation: str
    result: ClassifierResult
    model: str
    usage: Usage
    provenance: dict[str, Any]
    stored_id: int | None = None

    def preferred_score(self) -> float | None:
        """Balanced accuracy."""
        return self.result.get_preferred_score()

    def to_json(self) -> dict[str, Any]:
        """What `score --scorer detection|fuzzing --json` prints."""
        return {
            "explanation": self.explanation,
            **self.result.metrics(),
            "model": self.model,
            "endpoint": self.provenance.get("endpoint"),
            "missing": self.result.missing,
            "requests": self.usage.requests,
            "usage": self.usage.to_json(),
            "cost_usd": self.provenance.get("cost_usd"),
            "stored_id": self.stored_id,
        }


class NeuronRun:
    """Explains and scores neurons on one endpoint; `cancel()` stops it at once."""

    def __init__(
        self,
        backend: EndpointBackend,
        options: RunOptions,
        *,
        store: Store | None = None,
        profile: str = "",
        prices: PriceTable | None = None,
        run_id: str | None = None,
    ) -> None:
        self.backend = backend
        self.options = options
        self.store = store
        self.profile = profile
        self.prices = prices or PriceTable()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.endpoint = backend.endpoint_id
        self.sessions: list[LLMSession] = []
        self.capabilities: Capabilities | None = None
        self.choice: SimulatorChoice | None = None
        self.ledger = UsageLedger(run=self.run_id, budget=options.budget, prices=self.prices)
        self._choosing: asyncio.Future[SimulatorChoice] | None = None
        """The shared `choose_method` in progress or done (see `start_choosing`)."""
        self._choosers = 0
        """Calls waiting for `_choosing` (or about to)."""
        self._reused: set[int] = set()
        """Stored rows that stand for a result of this run (an earlier run's same result)."""
        """The whole run's usage and budget (each part's session reports to it)."""

    # --- sessions, budget, cancellation ---

    def _session(self) -> LLMSession:
        """A session for one part of the run; they share the run's ledger and budget."""
        session = LLMSession(
            self.backend,
            store=self.store,
            run=self.run_id,
            prices=self.prices,
            use_cache=self.options.use_cache,
            regenerate=self.options.regenerate,
            parent_ledger=self.ledger,
        )
        session.keep_responses = True
        self.sessions.append(session)
        call = _CALL_SESSIONS.get()
        if call is not None:
            call.append(session)
        return session

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """One explain/score call: its sessions, stopped on failure and forgotten after."""
        sessions: list[LLMSession] = []
        token = _CALL_SESSIONS.set(sessions)
        try:
            yield
        except BaseException as exc:
            await self._stop_after(exc, sessions)
            raise
        finally:
            _CALL_SESSIONS.reset(token)
            self._forget(sessions)

    def _forget(self, sessions: list[LLMSession]) -> None:
        """Drop finished sessions (their usage stays in the run's ledger)."""
        for session in sessions:
            if session in self.sessions:
                self.sessions.remove(session)
            session.responses.clear()

    async def _stop_after(self, exc: BaseException, sessions: list[LLMSession]) -> None:
        """After a failure: stop this call's requests, or the whole run's for a budget."""
        if isinstance(exc, BudgetExceeded):
            await self.stop_in_flight()
        else:
            await _stop_sessions(sessions)

    @property
    def usage(self) -> Usage:
        """Everything this run has used so far."""
        return self.ledger.usage

    def cancel(self) -> int:
        """Abort every request of the run in flight (callers get CancelledError), the probe's
        too."""
        probing = self._choosing is not None and not self._choosing.done()
        if probing:
            assert self._choosing is not None
            self._choosing.cancel()
        return sum(session.cancel() for session in self.sessions) + int(probing)

    async def stop_in_flight(self, timeout: float = 5.0) -> None:
        """Cancel the run's requests still in flight and wait until they are gone."""
        await _stop_sessions(self.sessions, timeout)

    @property
    def in_flight(self) -> int:
        """Requests of the run not yet answered."""
        return sum(session.in_flight for session in self.sessions)

    # --- the simulator ---

    async def choose_method(self) -> SimulatorChoice:
        """Probe the endpoint (once; remembered in the store) and pick the simulator.

        A simulator forced by the user needs no probe: a remembered one refines it (chat or
        completions for one-at-a-time, how many top logprobs), else defaults are used.
        """
        model = self._simulator_model()
        forced = self.options.method
        if forced is not None and not self.options.refresh_capabilities:
            self.choice = self._choice_without_probe(forced)
            return self.choice
        self.capabilities = await capabilities_for(
            self.backend,
            self.endpoint,
            model,
            self.store,
            refresh=self.options.refresh_capabilities,
        )
        self.choice = choose_simulator(
            self.capabilities, self.options.method, where=f"{self.endpoint} ({model})"
        )
        return self.choice

    def start_choosing(self) -> asyncio.Future[SimulatorChoice]:
        """Start `choose_method` without waiting for it, once for every caller until it is done
        (a failed or cancelled one starts again): the neurons of a batch share one probe, and a
        batch starts it before its neurons so that it goes out first."""
        task = self._choosing
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._choosing = asyncio.ensure_future(self.choose_method())
            task.add_done_callback(_retrieve)
        return task

    @contextlib.contextmanager
    def _choosing_for_me(self) -> Iterator[asyncio.Future[SimulatorChoice]]:
        """The shared choice, for one call that needs it: started if need be, and cancelled when
        the last call needing it ends before it is done (a cancelled run probes no further)."""
        task = self.start_choosing()
        self._choosers += 1
        try:
            yield task
        finally:
            self._choosers -= 1
            if self._choosers == 0 and not task.done():
                task.cancel()

    async def _shared_choice(self) -> SimulatorChoice:
        """The simulator choice, shared with concurrent calls (one probe for all)."""
        if self.choice is not None:
            return self.choice
        with self._choosing_for_me() as task:
            return await asyncio.shield(task)

    def known_choice(self) -> SimulatorChoice | None:
        """The choice from a remembered probe, without probing (None if never probed)."""
        if self.options.method is not None:
            return self._choice_without_probe(self.options.method)
        caps = self._known_capabilities()
        return choose_simulator(caps) if caps is not None else None

    def _known_capabilities(self) -> Capabilities | None:
        if self.store is None:
            return None
        return known_capabilities(self.store, self.endpoint, self._simulator_model())

    def _choice_without_probe(self, method: SimulatorMethod) -> SimulatorChoice:
        """`method` refined by a remembered probe, else with defaults (no request)."""
        caps = self._known_capabilities()
        if caps is not None:
            self.capabilities = caps
        where = f"{self.endpoint} ({self._simulator_model()})"
        return choose_simulator(caps or ASSUMED_CAPABILITIES, method, where=where)

    def staged_choice(self) -> SimulatorChoice:
        """The simulator without a probe (a staged batch can't probe): the forced one, else a
        remembered probe's choice; MethodError when neither is there."""
        choice = self.known_choice()
        if choice is None:
            raise MethodError(
                f"a staged batch cannot probe {self.endpoint}: pass --method, or run one online "
                "explain or score through this profile first so its probe is remembered"
            )
        if choice.method is None:
            raise MethodError(choice.reason)
        self.choice = choice
        return choice

    def explainer(self, backend: LLMBackend) -> TokenActivationPairExplainer:
        """The explainer this run uses, over `backend`."""
        return TokenActivationPairExplainer(
            self.options.explainer_model, prompt_format=PromptFormat.HARMONY_V4, backend=backend
        )

    def simulators(self, choice: SimulatorChoice, backend: LLMBackend) -> SimulatorFactory:
        """Builds the chosen simulator over `backend` for an explanation."""
        return simulator_factory(
            choice,
            self._simulator_model(),
            backend,
            max_concurrent=self.options.max_concurrent,
            compatible=self.options.compatible,
        )

    @property
    def simulator_model(self) -> str:
        """The model simulating (MethodError when none is named)."""
        return self._simulator_model()

    def _simulator_model(self) -> str:
        model = self.options.simulator_model or self.options.explainer_model
        if not model:
            raise MethodError("no simulator model: name one (--model) or set it in the profile")
        return model

    # --- scoring ---

    async def score(
        self,
        record: NeuronRecord,
        explanation: str,
        *,
        ref: NeuronRef | None = None,
        source: str = "user",
        extra: dict[str, Any] | None = None,
        on: Sequence[ActivationRecord] | None = None,
    ) -> ScoreOutcome:
        """Score `explanation` on the record's valid split (or on the records `on`, e.g. the
        user's own text); stored under `ref` when given.

        On a failure (an HTTP error, a cancellation) this call's other requests in flight are
        cancelled before the error is raised: nothing keeps running behind it. When the budget
        is reached, every request of the run is cancelled (other calls get CancelledError).
        """
        async with self._call():
            return await self._score(
                record, explanation, ref=ref, source=source, extra=extra, on=on
            )

    async def _score(
        self,
        record: NeuronRecord,
        explanation: str,
        *,
        ref: NeuronRef | None,
        source: str,
        extra: dict[str, Any] | None,
        on: Sequence[ActivationRecord] | None = None,
    ) -> ScoreOutcome:
        choice = await self._shared_choice()
        model = self._simulator_model()
        if choice.method is None:
            raise MethodError(choice.reason)
        session = self._session()
        started = time.time()
        factory = self.simulators(choice, session)
        scored = await score_explanation(
            record, explanation, factory, self.options.settings(), on=on
        )
        sequences = len(scored.scored_simulation.scored_sequence_simulations)
        provenance = self._provenance(session, started, choice, kind="score", extra=extra)
        for key, value in simulation_provenance(scored).items():
            provenance.setdefault(key, value)
        outcome = ScoreOutcome(
            explanation, scored, choice.method, model, sequences, session.usage, provenance
        )
        if ref is not None:
            outcome.stored_id = self._store(ref, outcome, source)
        return outcome

    # --- second-opinion scorers (detection, fuzzing) ---

    async def score_classifier(
        self,
        scorer: str,
        record: NeuronRecord,
        explanation: str,
        *,
        ref: NeuronRef | None = None,
        source: str = "user",
        settings: ClassifierSettings | None = None,
    ) -> ClassifierOutcome:
        """Score `explanation` by detection or fuzzing (chat only); stored under `ref`."""
        async with self._call():
            model = self._simulator_model()
            session = self._session()
            started = time.time()
            known = self._known_capabilities()
            logprobs = known is None or known.chat_top_logprobs > 0
            classifier = ClassifierScorer(
                scorer,
                model,
                backend=session,
                settings=settings,
                max_concurrent=self.options.max_concurrent,
                logprobs=logprobs,
            )
            result = await classifier.score(record, explanation)
            provenance = self._provenance(session, started, None, kind="score", extra=None)
            provenance.update(
                {
                    "scorer": scorer,
                    "method": scorer,
                    "method_reason": f"{scorer} (second-opinion scorer, chat completions only)",
                    "metrics": result.metrics(),
                    "missing": result.missing,
                    "answers": result.answers,
                }
            )
            provenance["parameters"] |= asdict(classifier.settings)
            outcome = ClassifierOutcome(explanation, result, model, session.usage, provenance)
            if ref is not None and self.store is not None and not self.store.read_only:
                # Everything is in the provenance; the result column holds simulation results.
                outcome.stored_id = Explanations(self.store).add(
                    ref, explanation, None, source, provenance
                )
            return outcome

    def estimate_classifier(
        self, scorer: str, record: NeuronRecord, settings: ClassifierSettings | None = None
    ) -> int:
        """How many requests `score_classifier` would send (the estimate shown first)."""
        return (settings or ClassifierSettings()).requests(record, scorer)

    # --- explaining ---

    async def explain(
        self,
        record: NeuronRecord,
        *,
        ref: NeuronRef | None = None,
        score: bool = True,
    ) -> list[ScoreOutcome]:
        """Generate `samples` explanations and score each (best first); stored under `ref`."""
        async with self._call():
            return await self._explain(record, ref=ref, score=score)

    async def _explain(
        self, record: NeuronRecord, *, ref: NeuronRef | None, score: bool
    ) -> list[ScoreOutcome]:
        options = self.options
        if not options.explainer_model:
            raise MethodError("no explainer model: name one (--model) or set it in the profile")
        session = self._session()
        started = time.time()
        with contextlib.ExitStack() as stack:
            # The probe (first call only) needs nothing of the explanation: both go out at once.
            probing = (
                stack.enter_context(self._choosing_for_me())
                if score and self.choice is None
                else None
            )
            texts = await generate_explanations(
                record, self.explainer(session), options.settings()
            )
            choice: SimulatorChoice | None = None
            if probing is not None:
                choice = await asyncio.shield(probing)
            elif score:
                choice = await self._shared_choice()
        explanations = [t.strip() for t in texts]
        explain_provenance = {
            "explainer_model": options.explainer_model,
            "explain_usage": session.usage.to_json(),
            "explain_requests": [key for _, _, key in session.responses],
            "explanation_prompt": _prompt_of(session),
            "raw_completions": texts,
            "explain_started": _iso(started),
        }
        outcomes: list[ScoreOutcome]
        if choice is None or choice.method is None:
            note = choice.reason if choice is not None else "not scored (--no-score)"
            outcomes = [
                ScoreOutcome(
                    text,
                    None,
                    None,
                    options.simulator_model,
                    0,
                    session.usage,
                    self._provenance(
                        session, started, choice, kind="explain", extra=explain_provenance
                    )
                    | {"note": note},
                )
                for text in explanations
            ]
            if ref is not None:
                for outcome in outcomes:
                    outcome.stored_id = self._store(ref, outcome, "generated")
            return outcomes
        outcomes = list(
            await asyncio.gather(
                *(
                    self._score(record, text, ref=ref, source="generated", extra=explain_provenance)
                    for text in explanations
                    if text
                )
            )
        )
        return best_first(outcomes, ScoreOutcome.preferred_score)

    # --- estimates (no requests) ---

    async def estimate_score(
        self,
        record: NeuronRecord,
        explanation: str,
        method: SimulatorMethod | None = None,
        *,
        on: Sequence[ActivationRecord] | None = None,
    ) -> RunEstimate:
        """What scoring `explanation` would send (`method` overrides the choice; `on` as in
        `score`)."""
        choice = self._estimate_choice(method)
        records = scoring_records(record, self.options.settings(), on)
        bodies = await record_scoring(
            records, explanation, lambda backend: self.simulators(choice, backend)
        )
        estimate = estimate_requests(
            bodies,
            endpoint=self.endpoint,
            cache=self._cache(),
            prices=self.prices,
            label=f"simulation ({method_name(choice.method or SimulatorMethod.CHAT_GENERATION)})",
        )
        estimate.notes.append(f"simulator: {choice.reason}")
        return estimate

    async def estimate_explain(
        self, record: NeuronRecord, method: SimulatorMethod | None = None, score: bool = True
    ) -> RunEstimate:
        """What explaining (and scoring each of the samples) would send."""
        options = self.options
        settings = options.settings()
        bodies, _ = await record_explaining(record, self.explainer, settings)
        estimate = estimate_requests(
            bodies,
            endpoint=self.endpoint,
            cache=None if options.regenerate else self._cache(),
            prices=self.prices,
            label="explanation",
        )
        if score:
            one = await self.estimate_score(record, PLACEHOLDER_EXPLANATION, method)
            k = options.samples
            estimate.add(
                RunEstimate(
                    requests=one.requests * k,
                    prompt_tokens=one.prompt_tokens * k,
                    max_completion_tokens=one.max_completion_tokens * k,
                    cost=None if one.cost is None else one.cost * k,
                    prompts=one.prompts,
                    notes=one.notes,
                )
            )
            estimate.notes.append(
                f"scoring estimated for {options.samples} explanation(s) of typical length"
            )
        return estimate

    def _estimate_choice(self, method: SimulatorMethod | None) -> SimulatorChoice:
        if method is not None:
            return self._choice_without_probe(method)
        known = self.known_choice()
        if known is not None and known.method is not None:
            return known
        if known is not None:
            raise MethodError(known.reason)
        guess = choose_simulator(ASSUMED_CAPABILITIES, SimulatorMethod.CHAT_GENERATION)
        return SimulatorChoice(
            guess.method,
            "not probed yet: estimated for chat generation (the probe picks on the first run)",
            top_logprobs=guess.top_logprobs,
        )

    def _cache(self) -> ResponseCache | None:
        if self.store is None or not self.options.use_cache:
            return None
        return ResponseCache(self.store)

    # --- provenance and storing ---

    def _provenance(
        self,
        session: LLMSession,
        started: float,
        choice: SimulatorChoice | None,
        *,
        kind: str,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        cost = session.ledger.cost
        provenance: dict[str, Any] = {
            "kind": kind,
            "endpoint": self.endpoint,
            "profile": self.profile,
            "model": self.options.simulator_model or self.options.explainer_model,
            "method": choice.method.value if choice and choice.method else None,
            "method_reason": choice.reason if choice else None,
            "parameters": self.options.parameters(choice),
            "usage": session.usage.to_json(),
            "cost_usd": cost if session.usage.requests else 0.0,
            "run": self.run_id,
            "time": _iso(time.time()),
            "duration_s": round(time.time() - started, 3),
            "requests": [key for _, _, key in session.responses],
            "neuron_desk": __version__,
        }
        if extra:
            provenance.update(extra)
        return provenance

    def _store(self, ref: NeuronRef, outcome: ScoreOutcome, source: str) -> int | None:
        """Store the outcome. A user's explanation scored again the same way, with the same
        score, is not stored twice: the earlier row stands for it (once per run)."""
        if self.store is None or self.store.read_only:
            return None
        explanations = Explanations(self.store)
        signature = _signature(outcome.provenance)
        for row in explanations.of(ref, source=source) if source == "user" else []:
            if (
                row.id not in self._reused
                and row.provenance.get("run") != self.run_id
                and row.explanation == outcome.explanation
                and _signature(row.provenance) == signature
                and row.score == outcome.preferred_score()
            ):
                self._reused.add(row.id)
                return row.id
        scored = outcome.scored
        return explanations.add(
            ref,
            outcome.explanation,
            outcome.preferred_score(),
            source,
            outcome.provenance,
            result_json=codec.dumps(scored) if scored is not None else None,
        )


def simulation_provenance(scored: ScoredExplanation) -> dict[str, Any]:
    """What a simulation score's provenance says of its values: scorer, sources, a warning."""
    simulations = [s.simulation for s in scored.scored_simulation.scored_sequence_simulations]
    sources = count_sources(simulations)
    out: dict[str, Any] = {"scorer": "simulation", "value_sources": sources}
    written = sources.get(SOURCE_WRITTEN, 0)
    method = scored.scored_simulation.method
    if written and method not in WRITTEN_METHODS:
        out["note"] = (
            f"{written} of {sum(sources.values())} positions read from the written digit (the "
            "endpoint gave no usable logprobs there); the rest from distributions"
        )
    return out


WRITTEN_METHODS = (SimulatorMethod.CHAT_WRITTEN_DIGITS.value, SimulatorMethod.LOGPROB_FREE.value)
"""Methods whose values are all written numbers (by design, not by a fallback)."""


SAME_RESULT_KEYS = ("kind", "endpoint", "model", "explainer_model", "method", "parameters")
"""The provenance that makes two results of one explanation the same result."""


def _signature(provenance: dict[str, Any]) -> dict[str, Any]:
    return {key: provenance.get(key) for key in SAME_RESULT_KEYS}


async def _stop_sessions(sessions: list[LLMSession], timeout: float = 5.0) -> None:
    """Cancel the sessions' requests in flight and wait until they are gone."""
    current = asyncio.current_task()
    tasks = [t for s in list(sessions) for t in s.pending_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shared task's failure as seen (each waiter gets it; none may be left)."""
    if not task.cancelled():
        task.exception()


def _prompt_of(session: LLMSession) -> str:
    for _path, body, _key in session.responses:
        messages = body.get("messages")
        if isinstance(messages, list):
            return "\n\n".join(f"[{m.get('role')}] {m.get('content')}" for m in messages)
        if isinstance(body.get("prompt"), str):
            return str(body["prompt"])
    return ""


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
