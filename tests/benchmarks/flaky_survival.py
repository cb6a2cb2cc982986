"""How many gpt2-xl-size scores finish against a provider that fails one request in three.

    python tests/benchmarks/flaky_survival.py [--scores 20] [--every 3] [--concurrency 16]

The fake OpenAI-compatible server (tests/fake_openai.py, real HTTP on 127.0.0.1) fails every
third request, alternately 429 with `Retry-After: 0.05` and 500, and otherwise answers as a
perfect oracle. Each score is the paper's: one explanation simulated on the valid split of a
GPT-2 XL-shaped record (5 top + 5 random records of 64 tokens: 640 positions; one-at-a-time
sends 640 requests a score). The client is what a profile opens: the default retry policy
(6 counted attempts, backoff from 0.5 s) with the profile's run-level retry budget (30 min).
It prints, per simulator, finished/total, the scores' range, the missing positions, the HTTP
attempts and the retries.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from neuron_desk.core.model import SimulatorMethod
from neuron_desk.llm.capabilities import Capabilities, choose_simulator, simulator_factory
from neuron_desk.llm.client import OpenAICompatibleClient, RetryPolicy
from neuron_desk.llm.profiles import Profile
from neuron_desk.method.pipeline import score_explanation
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import neuron_record, oracle

SIMULATORS = [
    ("prompt-logprobs", SimulatorMethod.PROMPT_LOGPROBS, False),
    ("one-at-a-time (chat)", SimulatorMethod.ONE_AT_A_TIME, True),
    ("one-at-a-time (completions)", SimulatorMethod.ONE_AT_A_TIME, False),
    ("chat generation", SimulatorMethod.CHAT_GENERATION, True),
    ("written digits", SimulatorMethod.CHAT_WRITTEN_DIGITS, True),
    ("logprob-free", SimulatorMethod.LOGPROB_FREE, True),
]


async def survive(
    method: SimulatorMethod, chat: bool, scores: int, every: int, concurrency: int
) -> str:
    fake = FakeOpenAI(neuron=oracle, flaky_every=every, retry_after=0.05)
    budget = Profile(name="bench", base_url="http://127.0.0.1").retry_budget_s
    caps = Capabilities(
        completions=True,
        prompt_logprobs=True,
        prompt_top_logprobs=15,
        completion_logprobs=15,
        chat=True,
        chat_top_logprobs=20 if chat else 0,
    )
    choice = choose_simulator(caps, method)
    record = neuron_record()
    finished, values, missing, errors = 0, [], 0, []
    started = time.perf_counter()
    with FakeServer(fake) as server:
        policy = RetryPolicy(run_budget=budget)
        async with OpenAICompatibleClient(
            server.base_url, max_concurrent=concurrency, retry=policy
        ) as client:
            factory = simulator_factory(choice, "fake-model", client)

            async def one() -> None:
                nonlocal finished, missing
                try:
                    scored = await score_explanation(record, "the letter e", factory)
                except Exception as exc:  # a benchmark counts failures instead of stopping
                    errors.append(f"{type(exc).__name__}: {exc}"[:160])
                    return
                finished += 1
                values.append(scored.get_preferred_score() or 0.0)
                missing += sum(
                    len(s.simulation.missing_positions)
                    for s in scored.scored_simulation.scored_sequence_simulations
                )

            await asyncio.gather(*(one() for _ in range(scores)))
            stats = client.stats
    took = time.perf_counter() - started
    low, high = (min(values), max(values)) if values else (0.0, 0.0)
    line = (
        f"{finished}/{scores} finished  score {low:.3f}..{high:.3f}  missing positions {missing}"
        f"  attempts {stats.attempts}  retries {stats.retries} (429 pauses {stats.pauses})"
        f"  {took:.1f} s"
    )
    return line + "".join(f"\n    {e}" for e in errors[:3])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=int, default=20)
    parser.add_argument("--every", type=int, default=3, help="fail every n-th request")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(f"{args.scores} scores per simulator; every {args.every}rd request fails (429/500)")
    for name, method, chat in SIMULATORS:
        line = await survive(method, chat, args.scores, args.every, args.concurrency)
        print(f"{name:28} {line}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
