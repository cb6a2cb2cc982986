"""The app's LLM runner: profiles, one shared backend per profile, runs that store at once.

It adapts `neuron_desk.llm.runs.NeuronRun` to the window: the estimate is reported before any
request is sent, progress is the share of estimated requests answered, and cancelling the
task cancels the run's requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from neuron_desk.core.errors import BackendConfigError
from neuron_desk.core.model import NeuronRecord
from neuron_desk.data.store import Store
from neuron_desk.llm.profiles import Profile, ProfileConfig, open_backend
from neuron_desk.llm.runs import NeuronRun, RunOptions, ScoreOutcome
from neuron_desk.qt.explanationpane import ExplanationEntry

logger = logging.getLogger(__name__)

NeuronKey = tuple[str, int, int]
Progress = Callable[[int, int], None]
Report = Callable[[str], None]


class LLMRunner:
    """Explains and scores for the window through the profiles of `llm_profiles.json`."""

    def __init__(self, store: Store, config: ProfileConfig | None = None) -> None:
        self.store = store
        try:
            self.config = config or ProfileConfig.load()
        except BackendConfigError as exc:
            logger.error("%s; using the built-in profiles", exc)
            self.config = ProfileConfig()
        self._backends: dict[str, Any] = {}

    def profile_names(self) -> list[str]:
        """Every profile, the default first."""
        names = [p.name for p in self.config.all()]
        default = self.default_profile()
        return [default, *[n for n in names if n != default]]

    def default_profile(self) -> str:
        """The profile used unless the user picks another."""
        try:
            return self.config.default_profile().name
        except BackendConfigError:
            return self.config.all()[0].name

    def profile(self, name: str) -> Profile:
        """A profile by name (the environment's ad hoc profile included)."""
        default = self.config.default_profile()
        return default if name == default.name else self.config.get(name)

    async def reload(self, config: ProfileConfig) -> None:
        """Use edited profiles from now on; the backends of the old ones are closed."""
        await self.aclose()
        self.config = config

    def _backend(self, profile: Profile) -> Any:
        if profile.name not in self._backends:
            self._backends[profile.name] = open_backend(profile, config=self.config)
        return self._backends[profile.name]

    def _run(self, profile_name: str, samples: int) -> NeuronRun:
        profile = self.profile(profile_name)
        options = RunOptions.for_profile(profile, samples=samples)
        return NeuronRun(
            self._backend(profile),
            options,
            store=self.store,
            profile=profile.name,
            prices=self.config.prices,
        )

    def describe_estimate(self, profile: str, samples: int, record: NeuronRecord) -> str:
        """A first line shown while the precise estimate is computed."""
        return f"Estimating the cost of {samples} explanation(s) on {profile}…"

    async def generate(
        self,
        profile: str,
        key: NeuronKey,
        record: NeuronRecord,
        samples: int,
        progress: Progress,
        report: Report,
    ) -> list[ExplanationEntry]:
        """Sample explanations, score each; every result is stored as it is made."""
        run = self._run(profile, samples)
        estimate = await run.estimate_explain(record)
        report(estimate.describe())
        outcomes = await self._with_progress(
            run, estimate.requests, progress, run.explain(record, where=key)
        )
        return [entry_of(o) for o in outcomes]

    async def score(
        self,
        profile: str,
        key: NeuronKey,
        record: NeuronRecord,
        explanation: str,
        progress: Progress,
        report: Report,
    ) -> ExplanationEntry:
        """Score the user's explanation; the result is stored."""
        run = self._run(profile, 1)
        estimate = await run.estimate_score(record, explanation)
        report(estimate.describe())
        outcome = await self._with_progress(
            run,
            estimate.requests,
            progress,
            run.score(record, explanation, where=key, source="user"),
        )
        return entry_of(outcome)

    async def _with_progress(
        self, run: NeuronRun, expected: int, progress: Progress, work: Any
    ) -> Any:
        async def watch() -> None:
            while True:
                usage = run.usage
                progress(min(usage.requests + usage.cached_requests, expected), max(expected, 1))
                await asyncio.sleep(0.2)

        watcher = asyncio.ensure_future(watch())
        try:
            return await work
        except asyncio.CancelledError:
            run.cancel()
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def aclose(self) -> None:
        """Close every backend (HTTP clients; the local server is stopped on exit)."""
        for backend in self._backends.values():
            closer = getattr(backend, "aclose", None)
            if closer is not None:
                await closer()
        self._backends.clear()


def entry_of(outcome: ScoreOutcome) -> ExplanationEntry:
    """An outcome as a row of the explanation pane."""
    simulation = outcome.scored.scored_simulation if outcome.scored is not None else None
    usage = outcome.usage
    return ExplanationEntry(
        explanation=outcome.explanation,
        score=simulation.ev_correlation_score if simulation else None,
        source=str(outcome.provenance.get("source", "generated")),
        method=outcome.method.value if outcome.method else "",
        model=outcome.model,
        scored=outcome.scored,
        usage=f"{usage.prompt_tokens + usage.completion_tokens} tokens, {usage.requests} requests",
    )
