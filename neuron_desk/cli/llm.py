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
import json
import sys
from typing import Any

from neuron_desk.cli.context import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, Context
from neuron_desk.cli.data import with_service
from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import BackendConfigError, BudgetExceeded
from neuron_desk.core.model import NeuronRecord
from neuron_desk.data.registry import Kind
from neuron_desk.llm.capabilities import METHOD_NAMES, parse_method
from neuron_desk.llm.estimate import RunEstimate
from neuron_desk.llm.ledger import Budget
from neuron_desk.llm.profiles import Profile, ProfileConfig, open_backend
from neuron_desk.llm.runs import NeuronRun, RunOptions, ScoreOutcome

METHOD_CHOICES = ["auto", *METHOD_NAMES]


def register(subparsers: Any) -> None:
    """Add the LLM commands."""
    p = subparsers.add_parser(
        "explain",
        help="have an LLM explain a neuron, and score the explanations",
        description="Explain a neuron from its top activations (train split) and score each "
        "explanation by simulation (valid split). Results are stored with provenance.",
    )
    _neuron_arguments(p)
    endpoint_arguments(p)
    p.add_argument("--model", help="the explainer model (default: the profile's)")
    p.add_argument("--simulator-model", help="the simulator model (default: the profile's)")
    p.add_argument("--samples", type=_positive, default=1, help="explanations to sample (1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    p.add_argument("--no-score", action="store_true", help="only generate the explanations")
    _run_arguments(p)
    p.set_defaults(run=cmd_explain)

    p = subparsers.add_parser(
        "score",
        help="score an explanation of a neuron by simulation",
        description="Score an explanation (written by you) on the neuron's valid split. "
        "The result is stored with provenance.",
    )
    _neuron_arguments(p)
    p.add_argument("--explanation", required=True, help="the explanation to score")
    endpoint_arguments(p)
    p.add_argument("--model", help="the simulator model (default: the profile's)")
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
    p.add_argument("--budget-tokens", type=_positive, help="stop the run at this many tokens")
    p.add_argument("--budget-usd", type=float, help="stop the run at this cost (needs prices)")
    p.add_argument("--regenerate", action="store_true", help="ask again instead of the cache")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--probe-again", action="store_true", help="probe the endpoint again")
    p.add_argument("--offline", action="store_true", help="read the neuron from stored data only")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--dry-run", action="store_true", help="print prompts and estimates; send nothing"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# --- commands ---


def cmd_explain(args: argparse.Namespace, context: Context) -> int:
    """Explain a neuron (and score its explanations)."""
    return _run(args, context, explain=True)


def cmd_score(args: argparse.Namespace, context: Context) -> int:
    """Score an explanation of a neuron."""
    if not args.explanation.strip():
        print("neuron-desk: the explanation is empty", file=sys.stderr)
        return EXIT_BAD_INPUT
    return _run(args, context, explain=False)


def cmd_usage(args: argparse.Namespace, context: Context) -> int:
    """Print token totals per endpoint and model."""
    rows = context.store.usage_totals(args.run_id)
    prices = ProfileConfig.load().prices
    out = []
    for endpoint, model, sent, cached, prompt, completion in rows:
        out.append(
            {
                "endpoint": endpoint,
                "model": model,
                "requests": sent,
                "cached_requests": cached,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": prices.cost(model, prompt, completion),
            }
        )
    if args.json:
        print(json.dumps(out, indent=1))
        return EXIT_OK
    if not out:
        print("no LLM requests recorded")
    for row in out:
        cost = f"  ${row['cost_usd']:.4f}" if row["cost_usd"] is not None else ""
        print(
            f"{row['endpoint']}  {row['model']}: {row['requests']} requests "
            f"({row['cached_requests']} cached), {row['prompt_tokens']:,} prompt + "
            f"{row['completion_tokens']:,} completion tokens{cost}"
        )
    return EXIT_OK


# --- the run ---


def _run(args: argparse.Namespace, context: Context, *, explain: bool) -> int:
    try:
        config = ProfileConfig.load()
        profile = config.resolve(args.profile, args.base_url)
        options = _options(args, profile, explain=explain)
    except (BackendConfigError, ValueError) as exc:
        print(f"neuron-desk: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    record = _load_record(context, args)
    if args.dry_run:
        return _dry_run(args, context, config, profile, options, record, explain=explain)
    return asyncio.run(_execute(args, context, config, profile, options, record, explain=explain))


def _options(args: argparse.Namespace, profile: Profile, *, explain: bool) -> RunOptions:
    method = parse_method(args.method or profile.simulator_method)
    if explain:
        explainer = args.model or profile.explainer_model
        simulator = (
            args.simulator_model or args.model or profile.simulator_model or profile.explainer_model
        )
    else:
        explainer = profile.explainer_model
        simulator = args.model or profile.simulator_model or profile.explainer_model
    if not simulator or (explain and not explainer):
        raise BackendConfigError(f"no model: pass --model (profile {profile.name!r} names none)")
    return RunOptions(
        explainer_model=explainer,
        simulator_model=simulator,
        method=method,
        samples=getattr(args, "samples", 1),
        temperature=getattr(args, "temperature", 1.0),
        budget=Budget(args.budget_tokens, args.budget_usd),
        regenerate=args.regenerate,
        use_cache=not args.no_cache,
        refresh_capabilities=args.probe_again,
    )


def _load_record(context: Context, args: argparse.Namespace) -> NeuronRecord:
    fetched = with_service(
        context,
        args.offline,
        lambda service: service.get(args.dataset, Kind.ACTIVATIONS, args.layer, args.neuron),
    )
    record: NeuronRecord = fetched.value
    return record


async def _execute(
    args: argparse.Namespace,
    context: Context,
    config: ProfileConfig,
    profile: Profile,
    options: RunOptions,
    record: NeuronRecord,
    *,
    explain: bool,
) -> int:
    backend = open_backend(profile, config=config)
    run = NeuronRun(
        backend, options, store=context.store, profile=profile.name, prices=config.prices
    )
    where = (args.dataset, args.layer, args.neuron)
    try:
        if explain:
            outcomes = await run.explain(record, where=where, score=not args.no_score)
        else:
            outcomes = [await run.score(record, args.explanation, where=where)]
    except BudgetExceeded as exc:
        usage = run.usage
        print(
            f"neuron-desk: stopped: {exc} (used {usage.requests} requests, "
            f"{usage.total_tokens:,} tokens; nothing was stored)",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    finally:
        await backend.aclose()
    _print_outcomes(args, run, outcomes, explain=explain)
    return EXIT_OK


def _print_outcomes(
    args: argparse.Namespace, run: NeuronRun, outcomes: list[ScoreOutcome], *, explain: bool
) -> None:
    total = run.usage
    if args.json:
        rows = [o.to_json() | {"run": run.run_id} for o in outcomes]
        if explain:
            print(json.dumps({"explanations": rows, "usage": total.to_json()}, indent=1))
        else:
            print(json.dumps(rows[0], indent=1))
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


class _NoRequests:
    """The backend of a dry run: it has a name and refuses to send anything."""

    def __init__(self, endpoint_id: str) -> None:
        self.endpoint_id = endpoint_id

    async def completions(self, body: JSONDict) -> JSONDict:
        raise AssertionError("a dry run sent a request")

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        raise AssertionError("a dry run sent a request")


def _dry_run(
    args: argparse.Namespace,
    context: Context,
    config: ProfileConfig,
    profile: Profile,
    options: RunOptions,
    record: NeuronRecord,
    *,
    explain: bool,
) -> int:
    run = NeuronRun(
        _NoRequests(profile.endpoint_id),
        options,
        store=context.store,
        profile=profile.name,
        prices=config.prices,
    )

    async def estimate() -> RunEstimate:
        if explain:
            return await run.estimate_explain(record, options.method, score=not args.no_score)
        return await run.estimate_score(record, args.explanation, options.method)

    result = asyncio.run(estimate())
    if args.json:
        print(
            json.dumps(
                {
                    "endpoint": profile.endpoint_id,
                    "profile": profile.name,
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
    print(f"=== dry run: nothing was sent to {profile.endpoint_id} ===")
    print(result.describe())
    return EXIT_OK
