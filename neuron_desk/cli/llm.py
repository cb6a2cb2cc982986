"""LLM commands: `explain` and `score` a neuron on an endpoint profile; `llm-usage` totals.

    neuron-desk explain DATASET LAYER NEURON [--profile P | --base-url URL] [--model M]
                        [--samples K] [--json] [--dry-run]
    neuron-desk score DATASET LAYER NEURON --explanation TEXT [--profile P | --base-url URL]
                      [--model M] [--method auto|prompt-logprobs|chat|one-at-a-time]
                      [--json] [--dry-run]

Results are stored with their provenance; responses are cached, so a repeated command sends
nothing (`--regenerate` asks again). `--dry-run` prints the prompts, the request count and a
token (and money, where priced) estimate, and sends nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable
from typing import Any

from neuron_desk.cli.context import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    Context,
    positive_float,
    positive_int,
)
from neuron_desk.cli.output import dumps_json
from neuron_desk.cli.progress import ProgressLine
from neuron_desk.core.errors import BackendConfigError, BudgetExceeded
from neuron_desk.core.refs import NeuronRef
from neuron_desk.desk import Desk
from neuron_desk.llm.capabilities import METHOD_NAMES
from neuron_desk.llm.profiles import Profile
from neuron_desk.method.classifiers import SCORERS, ClassifierSettings
from neuron_desk.runs.options import RunOptions
from neuron_desk.runs.run import ClassifierOutcome, NeuronRun, ScoreOutcome

METHOD_CHOICES = ["auto", *METHOD_NAMES]


def register(subparsers: Any) -> None:
    """Add the LLM commands."""
    p = subparsers.add_parser(
        "explain",
        help="have an LLM explain a neuron or latent, and score the explanations",
        description="Explain a neuron from its top activations (train split) and score each "
        "explanation by simulation (valid split). Results are stored with provenance.",
    )
    _neuron_arguments(p)
    endpoint_arguments(p)
    p.add_argument("--model", help="the explainer model (default: the profile's)")
    p.add_argument("--simulator-model", help="the simulator model (default: the profile's)")
    p.add_argument("--samples", type=positive_int, default=1, help="explanations to sample (1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    p.add_argument("--no-score", action="store_true", help="only generate the explanations")
    _run_arguments(p)
    p.set_defaults(run=cmd_explain)

    p = subparsers.add_parser(
        "score",
        help="score an explanation of a neuron or latent by simulation",
        description="Score an explanation (written by you) on the neuron's valid split. "
        "The result is stored with provenance.",
    )
    _neuron_arguments(p)
    p.add_argument("--explanation", required=True, help="the explanation to score")
    endpoint_arguments(p)
    p.add_argument("--model", help="the simulator model (default: the profile's)")
    p.add_argument(
        "--scorer",
        choices=SCORERS,
        default="simulation",
        help="simulation (the paper's correlation score, default), or a second opinion as delphi "
        "has them: detection (does an excerpt activate the neuron?) or fuzzing (are the marked "
        "tokens the activating ones?); both need only chat completions",
    )
    _run_arguments(p)
    p.set_defaults(run=cmd_score)

    p = subparsers.add_parser("llm-usage", help="tokens used by LLM requests, per endpoint")
    p.add_argument(
        "--run", dest="run_id", help="one run (its id is in the provenance of its results)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_usage)


def _neuron_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset")
    p.add_argument("layer", type=int)
    p.add_argument("neuron", type=int)


def endpoint_arguments(p: argparse.ArgumentParser) -> None:
    """--profile or --base-url (shared with the batch command)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--profile", help="an endpoint profile (see README: Endpoints)")
    group.add_argument("--base-url", help="an OpenAI-compatible base URL, e.g. http://host:8000/v1")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=METHOD_CHOICES,
        help="simulator (default: the profile's, normally auto: chosen from what the endpoint "
        "supports)",
    )
    p.add_argument("--budget-tokens", type=positive_int, help="stop the run at this many tokens")
    p.add_argument(
        "--budget-usd", type=positive_float, help="stop the run at this cost (needs prices)"
    )
    p.add_argument("--regenerate", action="store_true", help="ask again instead of the cache")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--probe-again", action="store_true", help="probe the endpoint again")
    p.add_argument(
        "--compatible",
        action="store_true",
        help="reproduce the original neuron-explainer where it differs (newline folding, "
        "one-at-a-time over /completions with max_tokens 1), to compare with published scores",
    )
    p.add_argument("--offline", action="store_true", help="read the neuron from stored data only")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--dry-run", action="store_true", help="print prompts and estimates; send nothing"
    )


# --- commands ---


def cmd_explain(args: argparse.Namespace, context: Context) -> int:
    """Explain a neuron (and score its explanations)."""
    return _run(args, context, explain=True)


def cmd_score(args: argparse.Namespace, context: Context) -> int:
    """Score an explanation of a neuron."""
    if not args.explanation.strip():
        print("neuron-desk: the explanation is empty", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.scorer != "simulation":
        return _run_classifier(args, context)
    return _run(args, context, explain=False)


def _run_classifier(args: argparse.Namespace, context: Context) -> int:
    """`score --scorer detection|fuzzing`: the estimate first, then the score."""
    desk = context.desk
    target = _target(args, desk, explain=False)
    if target is None:
        return EXIT_BAD_INPUT
    profile, options, ref = target
    run = desk.run(profile, options)
    settings = ClassifierSettings()

    def describe(requests: int) -> str:
        return (
            f"{args.scorer}: {requests} requests of {settings.batch_size} excerpts each to "
            f"{run.endpoint} ({settings.n_activating} activating, {settings.n_other} other at most)"
        )

    async def execute(desk: Desk) -> ClassifierOutcome | int:
        record = await desk.record(ref)
        requests = run.estimate_classifier(args.scorer, record, settings)
        if args.dry_run:
            return requests
        if not args.json:
            print(f"estimate: {describe(requests)}", file=sys.stderr, flush=True)
        return await run.score_classifier(
            args.scorer, record, args.explanation, ref=ref, settings=settings
        )

    try:
        outcome = context.run(execute, offline=args.offline)
    except BudgetExceeded as exc:
        print(f"neuron-desk: stopped: {exc} (nothing was stored)", file=sys.stderr)
        return EXIT_NOT_FOUND
    if isinstance(outcome, int):
        if args.json:
            print(
                dumps_json({"scorer": args.scorer, "requests": outcome, "endpoint": run.endpoint})
            )
        else:
            print(f"=== dry run: nothing was sent ===\n{describe(outcome)}")
        return EXIT_OK
    data = outcome.to_json() | {"run": run.run_id}
    if args.json:
        print(dumps_json(data, indent=1))
        return EXIT_OK
    print(f"explanation: {outcome.explanation}")
    print(
        f"{args.scorer}: balanced accuracy {_num(data['balanced_accuracy'])}, precision "
        f"{_num(data['precision'])}, recall {_num(data['recall'])}, F1 {_num(data['f1'])}, "
        f"AUC {_num(data['auc'])} ({data['n_answered']} of {data['n_excerpts']} excerpts "
        f"answered, {data['requests']} requests)"
    )
    if outcome.result.missing:
        print(f"missing: {len(outcome.result.missing)} unreadable answers", file=sys.stderr)
    return EXIT_OK


def cmd_usage(args: argparse.Namespace, context: Context) -> int:
    """Print token totals per endpoint and model."""
    desk = context.desk
    prices = desk.profiles.prices
    out = [
        {
            "endpoint": total.endpoint,
            "model": total.model,
            "requests": total.requests,
            "cached_requests": total.cached_requests,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "cached_prompt_tokens": total.cached_prompt_tokens,
            "batch_requests": total.batch_requests,
            "cost_usd": total.cost(prices),
        }
        for total in desk.usage(args.run_id)
    ]
    if args.run_id is not None and not out:
        print(f"neuron-desk: no LLM requests are recorded for run {args.run_id!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(dumps_json(out, indent=1))
        return EXIT_OK
    if not out:
        print("no LLM requests recorded")
    for row in out:
        cost = f"  ${row['cost_usd']:.4f}" if row["cost_usd"] is not None else ""
        print(
            f"{row['endpoint']}  {row['model']}: {row['requests']} requests "
            f"({row['cached_requests']} cached, {row['batch_requests']} by a staged batch), "
            f"{row['prompt_tokens']:,} prompt ({row['cached_prompt_tokens']:,} prefix-cached) + "
            f"{row['completion_tokens']:,} completion tokens{cost}"
        )
    return EXIT_OK


# --- the run ---


def _target(
    args: argparse.Namespace, desk: Desk, *, explain: bool
) -> tuple[Profile, RunOptions, NeuronRef] | None:
    """The profile, run options and neuron a command names; None (said on stderr) when the
    profile or its options are bad."""
    try:
        profile = desk.profile(args.profile, args.base_url)
        options = run_options(args, profile, explain=explain)
    except (BackendConfigError, ValueError) as exc:
        print(f"neuron-desk: {exc}", file=sys.stderr)
        return None
    return profile, options, desk.ref(args.dataset, args.layer, args.neuron)


def _run(args: argparse.Namespace, context: Context, *, explain: bool) -> int:
    desk = context.desk
    target = _target(args, desk, explain=explain)
    if target is None:
        return EXIT_BAD_INPUT
    profile, options, ref = target
    if args.dry_run:
        return _dry_run(args, desk.dry_run(profile, options), ref, context, explain=explain)
    run = desk.run(profile, options)
    progress = ProgressLine.for_args("requests", args.json)

    async def execute(desk: Desk) -> list[ScoreOutcome]:
        record = await desk.record(ref)
        expected = 0
        if progress.enabled:
            estimate = await (
                run.estimate_explain(record, score=not args.no_score)
                if explain
                else run.estimate_score(record, args.explanation)
            )
            expected = estimate.requests
        if explain:
            work = run.explain(record, ref=ref, score=not args.no_score)
        else:
            work = _single(run.score(record, args.explanation, ref=ref))
        if not progress.enabled:
            return await work
        return await _with_progress(run, expected, progress, work)

    try:
        outcomes = context.run(execute, offline=args.offline)
    except BudgetExceeded as exc:
        progress.finish()
        usage = run.usage
        print(
            f"neuron-desk: stopped: {exc} (used {usage.requests} requests, "
            f"{usage.total_tokens:,} tokens; nothing was stored)",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    finally:
        progress.finish()
    _print_outcomes(args, run, outcomes, explain=explain)
    return EXIT_OK


async def _single(work: Awaitable[ScoreOutcome]) -> list[ScoreOutcome]:
    return [await work]


async def _with_progress(
    run: NeuronRun, expected: int, progress: ProgressLine, work: Awaitable[list[ScoreOutcome]]
) -> list[ScoreOutcome]:
    """Await `work`, redrawing the progress line from the run's usage meanwhile."""

    async def watch() -> None:
        while True:
            usage = run.usage
            progress.update(
                usage.requests + usage.cached_requests,
                max(expected, usage.requests + usage.cached_requests),
                tokens=usage.total_tokens,
            )
            await asyncio.sleep(0.25)

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def run_options(args: argparse.Namespace, profile: Profile, *, explain: bool) -> RunOptions:
    """The run options of an explain/score/batch command: the profile's, with its flags."""
    options = RunOptions.for_profile(
        profile,
        model=args.model,
        simulator_model=getattr(args, "simulator_model", None),
        method=args.method,
        samples=getattr(args, "samples", 1),
        temperature=getattr(args, "temperature", 1.0),
        budget_tokens=args.budget_tokens,
        budget_usd=args.budget_usd,
        regenerate=getattr(args, "regenerate", False),
        use_cache=not getattr(args, "no_cache", False),
        refresh_capabilities=getattr(args, "probe_again", False),
    )
    options.compatible = getattr(args, "compatible", False)
    options.require_models(explain=explain, profile=profile.name)
    return options


def _print_outcomes(
    args: argparse.Namespace, run: NeuronRun, outcomes: list[ScoreOutcome], *, explain: bool
) -> None:
    total = run.usage
    if args.json:
        rows = [o.to_json() | {"run": run.run_id} for o in outcomes]
        if explain:
            print(dumps_json({"explanations": rows, "usage": total.to_json()}, indent=1))
        else:
            print(dumps_json(rows[0], indent=1))
        return
    for outcome in outcomes:
        data = outcome.to_json()
        print(f"explanation: {outcome.explanation}")
        if outcome.scored is not None:
            print(
                f"  score {_num(data['score'])}  (r² {_num(data['rsquared'])}, absolute "
                f"deviation explained {_num(data['absolute_dev_explained'])}) on "
                f"{data['sequences']} sequences"
            )
            if data["missing_positions"]:
                print(f"  {data['missing_positions']} token positions had no usable prediction")
        elif data.get("note"):
            print(f"  not scored: {data['note']}")
        if outcome.stored_id is not None:
            print(f"  stored as explanation #{outcome.stored_id}")
    choice = run.choice
    if choice is not None and choice.method is not None:
        print(f"simulator: {choice.reason}; model {run.options.simulator_model}")
    cost = run.ledger.cost
    money = f", ${cost:.4f}" if cost is not None and total.requests else ""
    print(
        f"endpoint {run.endpoint}: {total.requests} requests sent, {total.cached_requests} "
        f"answered from the cache; {total.prompt_tokens:,} prompt + "
        f"{total.completion_tokens:,} completion tokens{money}"
        + (" (counted with tiktoken)" if total.counted else "")
    )


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --- dry run ---


def _dry_run(
    args: argparse.Namespace, run: NeuronRun, ref: NeuronRef, context: Context, *, explain: bool
) -> int:
    options = run.options

    async def estimate(desk: Desk) -> Any:
        record = await desk.record(ref)
        if explain:
            return await run.estimate_explain(record, options.method, score=not args.no_score)
        return await run.estimate_score(record, args.explanation, options.method)

    result = context.run(estimate, offline=args.offline)
    if args.json:
        print(
            dumps_json(
                {
                    "endpoint": run.endpoint,
                    "profile": run.profile,
                    "explainer_model": options.explainer_model if explain else None,
                    "simulator_model": options.simulator_model,
                    **result.to_json(),
                    "prompts": [{"label": label, "prompt": text} for label, text in result.prompts],
                },
                indent=1,
            )
        )
        return EXIT_OK
    for label, text in result.prompts:
        print(f"=== {label} prompt ===")
        print(text)
        print()
    print(f"=== dry run: nothing was sent to {run.endpoint} ===")
    print(result.describe())
    return EXIT_OK
