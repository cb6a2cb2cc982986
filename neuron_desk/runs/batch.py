"""Batch runs: explain and score many neurons, resumable, within concurrency and budget limits.

A batch is named by its spec (dataset, neurons, profile, samples), so running the same command
again resumes it: a neuron is done when the store holds all its requested samples under the
batch's name (a partial neuron, left by a kill, is redone whole; its answers mostly come from
the response cache), and every result is stored the moment it is made. A neuron that cannot
be done (no usable records, a refused file, a failing endpoint) is recorded with its reason and
skipped; the others go on, and a rerun retries only the neurons not done. A budget cap stops
the batch cleanly (what finished is kept); rerunning after raising the cap continues.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from neuron_desk.core.errors import (
    BackendConfigError,
    BudgetExceeded,
    DataError,
    MethodError,
    NeuronDeskError,
    bounded,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.scores import best_of
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.runs.run import NeuronRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSpec:
    """What a batch covers; its name is derived from it unless given."""

    dataset: str
    neurons: tuple[NeuronRef, ...]
    profile: str
    samples: int = 1
    name: str = ""
    scorers: tuple[str, ...] = ()
    """Second-opinion scorers (detection, fuzzing) run on each neuron's best explanation."""

    @property
    def batch_id(self) -> str:
        """A stable name: the given one, else a hash of the spec."""
        if self.name:
            return f"batch-{self.name}"
        neurons = [[ref.layer, ref.index] for ref in self.neurons]
        parts: list[Any] = [self.dataset, neurons, self.profile, self.samples]
        if self.scorers:
            parts.append(list(self.scorers))
        key = json.dumps(parts)
        return "batch-" + hashlib.sha1(key.encode()).hexdigest()[:12]


@dataclass
class BatchSummary:
    """Counts, score distribution, usage and time of a batch (this run and in total)."""

    batch_id: str
    dataset: str
    total: int
    done_before: int = 0
    explained: int = 0
    failed: int = 0
    no_data: int = 0
    stopped: str = ""
    """Why the batch stopped early (a budget reached), or "" when it ran to the end."""
    scores: list[float] = field(default_factory=list)
    unscored: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cached_requests: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(neuron, reason) of every neuron that could not be done in this run."""
    second_opinions: dict[str, list[float | None]] = field(default_factory=dict)
    """Balanced accuracy per neuron of each second-opinion scorer (None: undefined, e.g. no
    non-activating excerpt to show)."""
    methods: dict[str, int] = field(default_factory=dict)
    """Simulation results per simulator method (written digits are labelled as such)."""
    notes: list[str] = field(default_factory=list)
    """What the user should know about how the batch ran (a concurrency that could not be
    raised, and why)."""

    @property
    def errors(self) -> list[str]:
        """Every failure as "layer:neuron: reason"."""
        return [f"{where}: {reason}" for where, reason in self.failures]

    @property
    def done(self) -> int:
        """Neurons with a stored result of this batch, over all its runs."""
        return self.done_before + self.explained

    def distribution(self) -> dict[str, Any]:
        """Min, quartiles, max and a 10-bin histogram of the best score per neuron."""
        if not self.scores:
            return {}
        ordered = sorted(self.scores)
        quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else ordered * 3
        bins = [0] * 10
        for s in ordered:
            bins[min(9, max(0, int((s + 1) / 2 * 10)))] += 1  # [-1, 1] in steps of 0.2
        return {
            "min": ordered[0],
            "q1": quartiles[0],
            "median": quartiles[1],
            "q3": quartiles[2],
            "max": ordered[-1],
            "mean": statistics.fmean(ordered),
            "histogram_from_-1_step_0.2": bins,
        }

    def to_json(self) -> dict[str, Any]:
        """The summary as written to the store and printed with --json."""
        data = asdict(self)
        data.pop("scores")
        data.pop("failures")
        data["errors"] = self.errors
        data["done"] = self.done
        data["scores"] = self.distribution()
        data["second_opinions"] = {
            scorer: _median_summary(values) for scorer, values in self.second_opinions.items()
        }
        return data

    def describe(self, units: str = "neurons") -> str:
        """A few lines for the terminal (`units`: what the dataset's units are called)."""
        unit = units.removesuffix("s")
        d = self.distribution()
        lines = [*self.notes]
        lines += [
            f"{self.batch_id}: {self.done}/{self.total} {units} done "
            f"({self.done_before} before this run, {self.explained} now); failed {self.failed}, "
            f"no activation records {self.no_data}",
            f"tokens {self.prompt_tokens + self.completion_tokens:,} in {self.requests} requests "
            f"({self.cached_requests} from cache); {self.seconds:.1f} s"
            + (f"; ${self.cost_usd:.4f}" if self.cost_usd is not None else ""),
        ]
        if d:
            lines.append(
                f"best score per {unit}: median {d['median']:.2f}, quartiles {d['q1']:.2f}–"
                f"{d['q3']:.2f}, range {d['min']:.2f}–{d['max']:.2f}"
            )
        for scorer, values in self.second_opinions.items():
            d2 = _median_summary(values)
            if d2 and d2["median"] is not None:
                lines.append(
                    f"{scorer} balanced accuracy per {unit}: median {d2['median']:.2f}, range "
                    f"{d2['min']:.2f}–{d2['max']:.2f} ({d2['neurons']} {units}, "
                    f"{d2['undefined']} undefined)"
                )
        if self.methods:
            lines.append(
                "simulators: " + ", ".join(f"{m} {n}" for m, n in sorted(self.methods.items()))
            )
        if self.stopped:
            lines.append(f"stopped early: {self.stopped} (rerun the same command to continue)")
        return "\n".join(lines)


Progress = Callable[[BatchSummary], None]


async def raise_in_flight_limit(backend: object, concurrency: int) -> str:
    """Let `concurrency` requests be on the wire at once (a batch's `--concurrency`, above the
    profile's `max_concurrency`); "" when done or not needed, else one line saying why not."""
    raise_to = getattr(backend, "raise_concurrency", None)
    if raise_to is None:
        return ""  # a backend that sends nothing (a dry run, a staged batch)
    try:
        await raise_to(concurrency)
    except BackendConfigError as exc:
        return (
            f"--concurrency {concurrency}: requests stay at the backend's limit ({exc}); "
            f"{concurrency} neurons run at once and their requests wait their turn"
        )
    return ""


async def run_batch(
    spec: BatchSpec,
    service: NeuronService,
    store: Store,
    run: NeuronRun,
    *,
    concurrency: int = 4,
    progress: Progress | None = None,
    only: set[NeuronRef] | None = None,
) -> BatchSummary:
    """Explain and score every neuron of `spec` not done yet (of `only`, when given: a staged
    batch's neurons whose responses are all cached); returns the summary. A neuron is done when
    all its samples are stored; a neuron with fewer is redone whole."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    batch_id = spec.batch_id
    explanations = Explanations(store)
    stored = explanations.counts_of_run(batch_id)
    done = {ref for ref, count in stored.items() if count >= spec.samples}
    todo = [ref for ref in spec.neurons if ref not in done and (only is None or ref in only)]
    for ref in todo:
        if stored.get(ref):
            explanations.delete_of_run(batch_id, ref)
    summary = BatchSummary(batch_id, spec.dataset, len(spec.neurons), done_before=len(done))
    if todo:
        note = await raise_in_flight_limit(run.backend, concurrency)
        if note:
            logger.warning("%s", note)
            summary.notes.append(note)
        if run.choice is None:
            run.start_choosing()  # one probe for the batch, sent before the first neuron's
    started = time.perf_counter()
    stop = asyncio.Event()
    outer = asyncio.current_task()
    pending = iter(todo)

    async def worker() -> None:
        """Take the next neuron until none is left: `concurrency` workers, not a task per
        neuron, so memory does not grow with the batch."""
        for ref in pending:
            if stop.is_set():
                return
            await one(ref)

    async def one(ref: NeuronRef) -> None:
        try:
            record = await service.get(ref, Kind.ACTIVATIONS)
            outcomes = await run.explain(record.value, ref=ref)
            best = next((o for o in outcomes if o.explanation.strip()), None)
            for scorer in spec.scorers if best is not None else ():
                assert best is not None
                await run.score_classifier(
                    scorer, record.value, best.explanation, ref=ref, source="generated"
                )
            summary.explained += 1
        except BudgetExceeded as exc:
            summary.stopped = str(exc)
            stop.set()
        except asyncio.CancelledError:
            if outer is not None and outer.cancelling():
                raise  # the batch itself is being cancelled (Ctrl+C, the app)
            # The run stopped (its budget) and cancelled this neuron's requests.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            stop.set()
            return
        except DataError as exc:
            summary.no_data += 1
            summary.failures.append((ref.short, bounded(str(exc))))
        except (NeuronDeskError, MethodError) as exc:
            summary.failed += 1
            summary.failures.append((ref.short, bounded(str(exc))))
        except (ValueError, ArithmeticError, LookupError, UnicodeError) as exc:
            # An unusable neuron (too few records for the splits, a token that cannot be
            # encoded) fails alone; the batch goes on.
            summary.failed += 1
            summary.failures.append((ref.short, bounded(f"{type(exc).__name__}: {exc}")))
        if progress is not None:
            progress(summary)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(todo)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    _finish(summary, explanations, run, time.perf_counter() - started)
    store.put_json("meta", batch_id, {"spec": asdict(spec), "summary": summary.to_json()})
    return summary


def _finish(
    summary: BatchSummary, explanations: Explanations, run: NeuronRun, seconds: float
) -> None:
    by_neuron: dict[NeuronRef, list[float | None]] = {}
    opinions: dict[str, dict[NeuronRef, float | None]] = {}
    for row in explanations.of_run(summary.batch_id):
        scorer = row.provenance.get("scorer", "simulation")
        if scorer != "simulation":
            value = (row.provenance.get("metrics") or {}).get("balanced_accuracy")
            opinions.setdefault(scorer, {})[row.ref] = value if isinstance(value, float) else None
            continue
        by_neuron.setdefault(row.ref, []).append(row.score)
        method = row.provenance.get("method")
        if method:
            summary.methods[method] = summary.methods.get(method, 0) + 1
    summary.second_opinions = {k: list(v.values()) for k, v in sorted(opinions.items())}
    best = [best_of(scores, lambda score: score) for scores in by_neuron.values()]
    summary.scores = [s for s in best if s is not None]
    summary.unscored = sum(1 for s in best if s is None)
    usage = run.usage
    summary.prompt_tokens = usage.prompt_tokens
    summary.completion_tokens = usage.completion_tokens
    summary.requests = usage.requests
    summary.cached_requests = usage.cached_requests
    summary.cost_usd = run.ledger.cost if run.ledger.cost else None
    summary.seconds = seconds


def _median_summary(values: list[float | None]) -> dict[str, Any]:
    """Median and range of the defined per-neuron values, and how many were undefined."""
    defined = [v for v in values if v is not None]
    if not values:
        return {}
    return {
        "median": statistics.median(defined) if defined else None,
        "min": min(defined) if defined else None,
        "max": max(defined) if defined else None,
        "neurons": len(values),
        "undefined": len(values) - len(defined),
    }
