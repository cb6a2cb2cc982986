"""An online batch against an oracle endpoint with a fixed latency: requests per second against
what `--concurrency` in flight allows (concurrency / latency).

    python tests/benchmarks/batch_throughput.py [--latency 1.0] [--concurrency 16 64] [--rounds 5]

The endpoint is the fake OpenAI-compatible server (tests/fake_openai.py, real HTTP on
127.0.0.1) answering as a perfect oracle after `latency` seconds; the neurons are synthetic
GPT-2-style records (tests/synthetic.py: 64-token sequences, 20 top and 15 random), explained
and scored with the prompt-logprobs simulator that the capability probe chooses. Every answer
reports `usage`, as vLLM's always does (so the client counts no tokens with tiktoken). The
batch runs as `neuron-desk batch --concurrency C` does (`Desk.batch` over a profile whose
`max_concurrency` is the default 8): C neurons at a time, and C requests on the wire (the
client's limit raised from the profile's). Requests are counted at the server.
Targets (issue 12): >= 80% of C / latency at C = 16 and 64, and one capability probe for the
whole batch (its requests counted at the server too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from neuron_desk.llm.capabilities import PROBE_MESSAGE, PROBE_PROMPT
from neuron_desk.runs.batch import BatchSpec, BatchSummary
from neuron_desk.runs.options import RunOptions
from tests.benchmarks.staged_batch import synthetic_desk
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import oracle

TARGET = 0.8
DATASET = "synthetic"


def probe_requests(fake: FakeOpenAI) -> int:
    """Requests the server got from capability probes."""
    return sum(
        1
        for _path, body in fake.requests
        if body.get("prompt") == PROBE_PROMPT
        or any(m.get("content") == PROBE_MESSAGE for m in body.get("messages") or [])
    )


def serve(latency: float, pipe: Connection) -> None:
    """The oracle server, in its own process (its CPU and GIL are not the client's): sends its
    base URL, then its counts when told to stop."""
    fake = FakeOpenAI(
        neuron=oracle, explanation=" words with the letter e", latency=latency, usage=True
    )
    with FakeServer(fake) as server:
        pipe.send(server.base_url)
        pipe.recv()
        pipe.send({"requests": len(fake.requests), "probes": probe_requests(fake),
                   "max_active": fake.max_active})  # fmt: skip


def run_one(latency: float, concurrency: int, rounds: int) -> dict[str, float]:
    """One batch of `rounds * concurrency` neurons; its rate and the server's counts."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=serve, args=(latency, theirs), daemon=True)
    child.start()
    base_url = ours.recv()
    with tempfile.TemporaryDirectory() as home:
        desk, neurons = synthetic_desk(Path(home), rounds * concurrency)
        try:
            profile = desk.profile(None, base_url)
            options = RunOptions.for_profile(profile, model="fake-model")
            spec = BatchSpec(DATASET, tuple(neurons), profile.name, 1, f"bench-{concurrency}")
            run = desk.run(profile, options, run_id=spec.batch_id)

            async def batch() -> tuple[BatchSummary, float, float]:
                started, cpu = time.perf_counter(), time.process_time()
                try:
                    summary = await desk.batch(spec, run, concurrency=concurrency)
                    return summary, time.perf_counter() - started, time.process_time() - cpu
                finally:
                    await desk.aclose()

            summary, seconds, cpu = asyncio.run(batch())
        finally:
            desk.close()
    ours.send("stop")
    counts = ours.recv()
    child.join(10)
    return {
        "neurons": len(neurons),
        "explained": summary.explained,
        "failed": summary.failed,
        "seconds": seconds,
        "cpu": cpu,
        "rate": counts["requests"] / seconds,
        **counts,
    }


def bench(target: str, figure: float, limit: float, unit: str, note: str, kind: str) -> None:
    ratio = figure / limit
    line = {
        "benchmark": "batch_throughput",
        "target": target,
        "figure": round(figure, 2),
        "unit": unit,
        "limit": round(limit, 2),
        "ratio": round(ratio, 3),
        "ok": ratio >= 1 if kind == "min" else ratio <= 1,
        "note": note,
    }
    if kind == "min":
        line["limit_kind"] = "min"
    print("BENCH " + json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=4, help="neurons per batch / concurrency")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    for concurrency in args.concurrency:
        limit = concurrency / args.latency
        result = run_one(args.latency, concurrency, args.rounds)
        print(
            f"--concurrency {concurrency}: {result['explained']}/{result['neurons']} neurons "
            f"({result['failed']} failed), {result['requests']} requests in "
            f"{result['seconds']:.1f} s = {result['rate']:.1f} req/s (limit {limit:.0f}); at most "
            f"{result['max_active']} in flight at the server; {result['probes']} probe requests; "
            f"client CPU {result['cpu']:.1f} s ({result['cpu'] / result['requests'] * 1000:.1f} "
            "ms per request, all threads)",
            flush=True,
        )
        shape = (
            f"{result['neurons']} synthetic neurons explained + scored (prompt-logprobs), "
            f"oracle at {args.latency * 1000:.0f} ms, --concurrency {concurrency} over a profile "
            f"of max_concurrency 8; {result['requests']} requests in {result['seconds']:.1f} s, "
            f"at most {result['max_active']} in flight; client CPU "
            f"{result['cpu'] / result['requests'] * 1000:.1f} ms per request"
        )
        bench(
            f"batch at {concurrency} in flight, >= {TARGET:.0%} of concurrency/latency",
            result["rate"],
            limit * TARGET,
            "req/s",
            shape,
            "min",
        )
        bench(
            f"capability probes in a batch of {concurrency} concurrent neurons",
            result["probes"],
            2,
            "requests",
            "one probe per endpoint + model (2 requests here: echo logprobs, chat top_logprobs)",
            "max",
        )


if __name__ == "__main__":
    main()
