"""Operations that never touch widgets (Anki's `CollectionOp(...).success(cb)`): each runs a
coroutine through the desk as a named task and reports back only through the callbacks it is
given — success, failure, progress, an estimate text, and `finished` whatever the outcome.

    ops.generate(ref, record, "local", 3).progress(bar.update).success(show).run()

Starting an operation under a task name cancels the one running under it (one LLM run at a
time, one export at a time); cancelling a run cancels its requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from neuron_desk.core.errors import (
    BackendConfigError,
    BackendHTTPError,
    BackendUnavailable,
    NeuronDeskError,
)
from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.exports import NeuronExport
from neuron_desk.data.service import NeuronData
from neuron_desk.desk import Desk
from neuron_desk.llm.capabilities import capabilities_for, choose_simulator
from neuron_desk.llm.client import RetryPolicy
from neuron_desk.llm.profiles import Profile, ProfileConfig, open_backend, open_client
from neuron_desk.qt.asyncbridge import TaskSlots
from neuron_desk.runs.estimate import RunEstimate
from neuron_desk.runs.options import RunOptions
from neuron_desk.runs.run import NeuronRun, ScoreOutcome

T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]
TextCallback = Callable[[str], None]


class Reporter:
    """What a running operation tells its caller along the way."""

    def __init__(self) -> None:
        self.on_progress: ProgressCallback | None = None
        self.on_estimate: TextCallback | None = None

    def progress(self, done: int, total: int) -> None:
        """`done` of `total` steps are finished."""
        if self.on_progress is not None:
            self.on_progress(done, total)

    def estimate(self, text: str) -> None:
        """What the operation expects to cost (shown before and while it runs)."""
        if self.on_estimate is not None:
            self.on_estimate(text)


Work = Callable[[Reporter], Coroutine[Any, Any, T]]


class Operation(Generic[T]):
    """One operation: set its callbacks, then `run()` it as the task called `name`.

    `finished` is called first whatever the outcome (also when cancelled), then `success` with
    the result or `failure` with the error. Without a failure callback the error goes to the
    task slots' handler.
    """

    def __init__(self, tasks: TaskSlots, name: str, work: Work[T]) -> None:
        self.tasks = tasks
        self.name = name
        self._work = work
        self._reporter = Reporter()
        self._on_success: Callable[[T], None] | None = None
        self._on_failure: Callable[[Exception], None] | None = None
        self._on_finished: Callable[[], None] | None = None
        self._ended = False

    def success(self, callback: Callable[[T], None]) -> Operation[T]:
        """Call `callback(result)` when the operation succeeds."""
        self._on_success = callback
        return self

    def failure(self, callback: Callable[[Exception], None]) -> Operation[T]:
        """Call `callback(error)` when the operation fails (not when it is cancelled)."""
        self._on_failure = callback
        return self

    def finished(self, callback: Callable[[], None]) -> Operation[T]:
        """Call `callback()` when the operation ends, however it ends."""
        self._on_finished = callback
        return self

    def progress(self, callback: ProgressCallback) -> Operation[T]:
        """Call `callback(done, total)` as the operation advances."""
        self._reporter.on_progress = callback
        return self

    def estimate(self, callback: TextCallback) -> Operation[T]:
        """Call `callback(text)` with the operation's cost estimate."""
        self._reporter.on_estimate = callback
        return self

    def run(self) -> asyncio.Task[None]:
        """Start it (cancelling the task of the same name); the task."""
        task = self.tasks.start(self.name, self._run())
        task.add_done_callback(lambda _task: self._finish())  # cancelled before it started
        return task

    async def _run(self) -> None:
        try:
            result = await self._work(self._reporter)
        except asyncio.CancelledError:
            self._finish()
            raise
        except Exception as exc:
            self._finish()
            if self._on_failure is None:
                raise
            self._on_failure(exc)
            return
        self._finish()
        if self._on_success is not None:
            self._on_success(result)

    def _finish(self) -> None:
        if not self._ended:
            self._ended = True
            if self._on_finished is not None:
                self._on_finished()


PROBE_TIMEOUT_S = 15.0
"""A connection test ends within this many seconds, whatever the endpoint does."""


class Operations:
    """The app's operations over one desk: runs, exports, probes and profile changes."""

    RUN_TASK = "ops.run"
    """Generate & score, or score your own explanation (one at a time)."""
    EXPORT_TASK = "ops.export"
    PROBE_TASK = "ops.probe"
    PROFILES_TASK = "ops.profiles"

    def __init__(self, desk: Desk, tasks: TaskSlots | None = None) -> None:
        self.desk = desk
        self.tasks = tasks if tasks is not None else TaskSlots()

    def running(self, name: str = RUN_TASK) -> bool:
        """Whether the operation task called `name` is running."""
        return self.tasks.running(name)

    def cancel(self, name: str = RUN_TASK) -> bool:
        """Cancel the operation task called `name` (its requests in flight too); True if one
        was running."""
        return self.tasks.cancel(name)

    # --- profiles ---

    def default_profile_name(self) -> str:
        """The profile used unless the user picks another."""
        profiles = self.desk.profiles
        try:
            return profiles.default_profile().name
        except BackendConfigError:
            return profiles.all()[0].name

    def profile_names(self) -> list[str]:
        """Every profile, the default first."""
        default = self.default_profile_name()
        return [default, *[p.name for p in self.desk.profiles.all() if p.name != default]]

    def profile(self, name: str) -> Profile:
        """A profile by name (the environment's ad hoc default included)."""
        default = self.desk.profiles.default_profile()
        return default if name == default.name else self.desk.profile(name)

    def use_profiles(self, config: ProfileConfig) -> Operation[None]:
        """Use edited profiles from now on (the old ones' backends are closed)."""

        async def work(_: Reporter) -> None:
            await self.desk.use_profiles(config)

        return Operation(self.tasks, self.PROFILES_TASK, work)

    def probe(self, profile: Profile, timeout: float = PROBE_TIMEOUT_S) -> Operation[str]:
        """Test a profile as edited (maybe unsaved): which simulators its endpoint supports
        (remembered in the store); the result is a text for the user. It ends within
        `timeout` seconds; a failure says what is wrong (`probe_failure`)."""

        async def work(_: Reporter) -> str:
            model = profile.simulator_model or profile.explainer_model
            if not model:
                raise BackendConfigError(f"profile {profile.name!r} names no model: set one")
            # Its own backend (the profile may be unsaved), with short timeouts and retries.
            backend = (
                open_backend(profile)
                if profile.is_local
                else open_client(
                    replace(profile, timeout=min(profile.timeout, timeout * 0.6)),
                    retry=RetryPolicy(max_attempts=2, base_delay=0.2, max_total=timeout * 0.3),
                )
            )
            try:
                caps = await asyncio.wait_for(
                    capabilities_for(
                        backend, backend.endpoint_id, model, self.desk.store, refresh=True
                    ),
                    timeout,
                )
            except TimeoutError:
                raise BackendUnavailable(
                    f"no complete answer from {profile.base_url} within {timeout:.0f} s"
                ) from None
            finally:
                await backend.aclose()
            return f"Connected. {caps.describe()}\nSimulator: {choose_simulator(caps).reason}"

        return Operation(self.tasks, self.PROBE_TASK, work)

    def endpoint_problem(self, name: str) -> str | None:
        """Why profile `name` can't run now (no key set, local model not installed), in
        words that point to Settings; None when it may run."""
        try:
            profile = self.profile(name)
        except NeuronDeskError as exc:
            return f"{exc}. Set up an endpoint in Settings."
        if profile.is_local:
            from neuron_desk.llm.local import local_available

            ready, _hint = local_available()
            if not ready:
                return (
                    "No LLM endpoint is set up (the local model is not installed): add one "
                    "in Settings or from a preset under Help → Welcome."
                )
        elif profile.api_key.startswith("env:") and not os.environ.get(profile.api_key[4:]):
            return (
                f"Profile {profile.name!r} reads its key from {profile.api_key[4:]}, which is "
                "not set: set it and restart, or pick or add another endpoint in Settings."
            )
        return None

    # --- runs ---

    def generate(
        self, ref: NeuronRef, record: NeuronRecord, profile: str, samples: int
    ) -> Operation[list[ScoreOutcome]]:
        """Sample `samples` explanations of a neuron and score each; every result is stored
        as it is made. The result: the outcomes, best first."""

        async def work(report: Reporter) -> list[ScoreOutcome]:
            report.estimate(_estimating(samples, profile))
            run = self._run(profile, samples)
            estimate = await run.estimate_explain(record)
            report.estimate(estimate.describe())
            explaining = run.explain(record, ref=ref)
            return await _with_progress(run, estimate.requests, report, explaining)

        return Operation(self.tasks, self.RUN_TASK, work)

    def score(
        self, ref: NeuronRef, record: NeuronRecord, profile: str, explanation: str
    ) -> Operation[ScoreOutcome]:
        """Score the user's explanation of a neuron; the result is stored."""

        async def work(report: Reporter) -> ScoreOutcome:
            report.estimate(_estimating(1, profile))
            run = self._run(profile, 1)
            estimate = await run.estimate_score(record, explanation)
            report.estimate(estimate.describe())
            scoring = run.score(record, explanation, ref=ref, source="user")
            return await _with_progress(run, estimate.requests, report, scoring)

        return Operation(self.tasks, self.RUN_TASK, work)

    def estimate_generate(
        self, record: NeuronRecord, profile: str, samples: int
    ) -> Operation[RunEstimate]:
        """What Generate & score would send (nothing is sent), under the run's task name."""

        async def work(report: Reporter) -> RunEstimate:
            report.estimate(_estimating(samples, profile))
            estimate = await self._run(profile, samples).estimate_explain(record)
            report.estimate(estimate.describe())
            return estimate

        return Operation(self.tasks, self.RUN_TASK, work)

    def estimate_score(
        self, record: NeuronRecord, profile: str, explanation: str
    ) -> Operation[RunEstimate]:
        """What scoring `explanation` would send (nothing is sent)."""

        async def work(report: Reporter) -> RunEstimate:
            report.estimate(_estimating(1, profile))
            estimate = await self._run(profile, 1).estimate_score(record, explanation)
            report.estimate(estimate.describe())
            return estimate

        return Operation(self.tasks, self.RUN_TASK, work)

    def _run(self, profile_name: str, samples: int) -> NeuronRun:
        profile = self.profile(profile_name)
        return self.desk.run(profile, RunOptions.for_profile(profile, samples=samples))

    # --- exports ---

    def export_neuron(
        self, ref: NeuronRef, data: NeuronData | None, path: str | Path
    ) -> Operation[NeuronExport]:
        """Export a neuron's explanations and scores (upstream-readable JSON) and their
        provenance sidecar; `data` is used when it is the neuron's, loaded."""

        async def work(_: Reporter) -> NeuronExport:
            if data is not None and data.ref == ref:
                export = self.desk.export_of(data)
            else:
                export = await self.desk.export(ref)
            self.desk.write_export(export, path)
            return export

        return Operation(self.tasks, self.EXPORT_TASK, work)

    def export_generated(self, dataset: str, path: str | Path) -> Operation[int]:
        """Export every neuron of `dataset` with generated results, one line each; the
        result is the number of neurons."""

        async def work(_: Reporter) -> int:
            return self.desk.export_generated(dataset, path)

        return Operation(self.tasks, self.EXPORT_TASK, work)


def probe_failure(profile: Profile, error: BaseException) -> str:
    """What is wrong, from a failed connection test: no key set, unreachable, a refused key,
    no such model, or the error's own words."""
    model = profile.simulator_model or profile.explainer_model
    if isinstance(error, BackendConfigError):
        text = str(error)
        if "not set" in text or "no key" in text:
            return f"No API key set: {text}."
        return f"Not configured: {text}"
    if isinstance(error, BackendHTTPError):
        lower = str(error).lower()
        if error.status_code in (401, 403):
            return (
                f"The key was refused (HTTP {error.status_code}) by {profile.base_url}: "
                f"check the key in {profile.api_key}."
            )
        if error.status_code == 404 and "model" in lower:
            return f"No such model at {profile.base_url}: {model!r} (HTTP 404)."
        return f"The endpoint answered with an error: {error}"
    if isinstance(error, BackendUnavailable):
        return f"Unreachable: {profile.base_url} ({error})."
    return f"Failed: {error}"


def _estimating(samples: int, profile: str) -> str:
    return f"Estimating the cost of {samples} explanation(s) on {profile}…"


def sent(run: NeuronRun) -> str:
    """What a run sent, once it ended (done, failed or cancelled), on the line its estimate
    took before it ran."""
    usage = run.usage
    lines = [
        f"sent: {usage.requests} request(s), {usage.cached_requests} more answered from the "
        f"cache; {usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion tokens"
        + (" (some counted here: the server reported none)" if usage.counted else "")
    ]
    if run.choice is not None:
        lines.append(f"simulator: {run.choice.reason}")
    return "\n".join(lines)


async def _with_progress(
    run: NeuronRun, expected: int, report: Reporter, work: Coroutine[Any, Any, T]
) -> T:
    """Await `work`, reporting answered requests as progress; a cancel cancels the run."""

    async def watch() -> None:
        while True:
            usage = run.usage
            report.progress(min(usage.requests + usage.cached_requests, expected), max(expected, 1))
            await asyncio.sleep(0.2)

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        run.cancel()
        raise
    finally:
        report.estimate(sent(run))  # it said what would be sent; now what was (or failed)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
