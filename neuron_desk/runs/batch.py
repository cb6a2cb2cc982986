"""Batch runs: explain and score many neurons, resumable, within concurrency and budget limits.

A batch is named by its spec (dataset, neurons, profile, samples), so running the same command
again resumes it: a neuron is done when the store holds an explanation whose provenance names
the batch, and every result is stored the moment it is made. A budget cap stops the batch
cleanly (what finished is kept); rerunning after raising the cap continues where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from neuron_desk.core.errors import BudgetExceeded, DataError, MethodError, NeuronDeskError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.scores import best_of
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.runs.run import NeuronRun


@dataclass(frozen=True)
class BatchSpec:
    """What a batch covers; its name is derived from it unless given."""

    dataset: str
    neurons: tuple[NeuronRef, ...]
    profile: str
    samples: int = 1
    name: str = ""

    @property
    def batch_id(self) -> str:
        """A stable name: the given one, else a hash of the spec."""
        if self.name:
            return f"batch-{self.name}"
        neurons = [[ref.layer, ref.index] for ref in self.neurons]
        key = json.dumps([self.dataset, neurons, self.profile, self.samples])
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
    errors: list[str] = field(default_factory=list)

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
        data["done"] = self.done
        data["scores"] = self.distribution()
        return data

    def describe(self) -> str:
        """A few lines for the terminal."""
        d = self.distribution()
        lines = [
            f"{self.batch_id}: {self.done}/{self.total} neurons done "
            f"({self.done_before} before this run, {self.explained} now); failed {self.failed}, "
            f"no activation records {self.no_data}",
            f"tokens {self.prompt_tokens + self.completion_tokens:,} in {self.requests} requests "
            f"({self.cached_requests} from cache); {self.seconds:.1f} s"
            + (f"; ${self.cost_usd:.4f}" if self.cost_usd is not None else ""),
        ]
        if d:
            lines.append(
                f"best score per neuron: median {d['median']:.2f}, quartiles {d['q1']:.2f}–"
                f"{d['q3']:.2f}, range {d['min']:.2f}–{d['max']:.2f}"
            )
        if self.stopped:
            lines.append(f"stopped early: {self.stopped} (rerun the same command to continue)")
        return "\n".join(lines)


Progress = Callable[[BatchSummary], None]


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
    batch's neurons whose responses are all cached); returns the summary."""
    batch_id = spec.batch_id
    explanations = Explanations(store)
    done = explanations.neurons_of_run(batch_id)
    todo = [ref for ref in spec.neurons if ref not in done and (only is None or ref in only)]
    summary = BatchSummary(batch_id, spec.dataset, len(spec.neurons), done_before=len(done))
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
            await run.explain(record.value, ref=ref)
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
            summary.errors.append(f"{ref.short}: {exc}")
        except (NeuronDeskError, MethodError) as exc:
            summary.failed += 1
            summary.errors.append(f"{ref.short}: {exc}")
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
    for row in explanations.of_run(summary.batch_id):
        by_neuron.setdefault(row.ref, []).append(row.score)
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
