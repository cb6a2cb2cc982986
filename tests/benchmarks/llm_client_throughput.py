"""Throughput of the LLM client with real-size answers against a server with a fixed latency.

    python tests/benchmarks/llm_client_throughput.py [--latency 0.1] [--concurrency 16] [--seconds 4]

The server is a separate process (as a real vLLM is another process or machine: it must not
share the client's GIL or its core), asyncio, HTTP/1.1 keep-alive. It answers every request
after `latency` seconds as vLLM's OpenAI server does for a non-streaming /completions: FastAPI's
`JSONResponse` (Starlette: compact `json.dumps(..., ensure_ascii=False, allow_nan=False,
separators=(",", ":"))`, one body with `Content-Length`, no chunked encoding) sent by uvicorn
(`date`, `server`, `content-length`, `content-type` headers). The answer is a prompt-logprobs
echo of the prompt-logprobs scorer's own prompt for a 64-token excerpt (the original few-shot
examples): /completions with `echo` and `logprobs=15` returns 15 alternatives with
full-precision logprobs at every prompt position (~1,480 BPE-like tokens; the digits 0..10
among them at each "unknown"), ~653 KB of compact JSON per answer
(`tests.fake_openai.vllm_prompt_logprobs_echo`), with `usage`. The client sends distinct
/completions requests shaped like the scorer's (its prompt after a distinct first line),
`concurrency` at a time; the best possible rate is concurrency / latency requests per second
(160/s at 100 ms x 16).

Measured twice: the bare client (HTTP, redaction, decoding), and through an `LLMSession` as
runs use it (response cache lookup, the raw answer compressed and written to a SQLite store,
usage ledger written per request); both read every answer with the scorer's own
`parse_prompt_logprobs_response` (all its checks, every slot's distribution), so what the
client leaves undecoded and the scorer reads is measured too. Target (issue 12): >= 70% of the limit.
Printed as BENCH lines (figure, limit, ratio in the same run), with the session's CPU ceiling
(1 / its CPU seconds per answer, all threads): on a loaded machine the rate measures the share
of a core the client got, the ceiling what the client needs.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import multiprocessing
import os
import platform
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from neuron_desk.data.store import Store
from neuron_desk.llm.cache import ResponseCache, compress_body
from neuron_desk.llm.client import DEFAULT_TRANSPORT, TRANSPORTS, OpenAICompatibleClient
from neuron_desk.llm.session import LLMSession
from neuron_desk.method.simulators import (
    ExplanationNeuronSimulator,
    parse_prompt_logprobs_response,
)
from tests.fake_openai import bpe_like_pieces, starlette_json, vllm_prompt_logprobs_echo

TARGET = 0.7
"""The session's rate must reach this share of concurrency / latency."""
EXCERPT = re.findall(
    r" ?\w+|[^\w\s]",
    "The quick brown fox jumps over the lazy dog while the researchers watched the neural "
    "network predict activations on every token of a short document about animals, weather "
    "and sports in the city. Later that evening, the committee published its report on the "
    "river's flooding, which had closed three bridges and delayed trains for most of the week.",
)[:64]
"""The 64 tokens scored (the paper's excerpt length)."""
PROMPT = ExplanationNeuronSimulator("m", "animals, weather and city words").make_simulation_prompt(
    EXCERPT
)
"""The prompt-logprobs scorer's own prompt for them (the original few-shot examples, ~3.3 KB):
its echo in BPE-like tokens (`bpe_like_pieces`: ~1,480 positions) is ~653 KB of compact JSON."""


def answer_bytes() -> bytes:
    """The ~653 KB answer every request gets, rendered as vLLM's JSONResponse renders it."""
    assert isinstance(PROMPT, str)
    return starlette_json(vllm_prompt_logprobs_echo(PROMPT, pieces=bpe_like_pieces(PROMPT)))


def serve(port: int, latency: float, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """The latency server (runs in a child process)."""
    answer = answer_bytes()

    def head() -> bytes:  # uvicorn's status line and headers for a JSONResponse
        return (
            b"HTTP/1.1 200 OK\r\ndate: "
            + email.utils.formatdate(usegmt=True).encode()
            + b"\r\nserver: uvicorn\r\n"
            + f"content-length: {len(answer)}\r\n".encode()
            + b"content-type: application/json\r\n\r\n"
        )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(latency)
                writer.write(head())
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(
    base_url: str,
    concurrency: int,
    requests: int,
    store: Store | None,
    tag: str,
    transport: str = DEFAULT_TRANSPORT,
) -> tuple[float, float]:
    """Requests per second for `requests` distinct requests at `concurrency` (each answer read
    by the scorer's parse, then dropped, as the scorer does), and the client's
    CPU seconds per request (all its threads: the cache compresses and writes in a worker);
    over the client's `transport` (`TRANSPORTS`)."""
    prompt = PROMPT
    assert isinstance(prompt, str)
    http = TRANSPORTS[transport](concurrency)
    async with OpenAICompatibleClient(
        base_url, max_concurrent=concurrency, transport=http
    ) as client:
        backend = LLMSession(client, store=store) if store is not None else client

        def body(i: int) -> dict[str, object]:
            return {
                "model": "m",
                "prompt": f"{tag} {i}\n{prompt}",
                "max_tokens": 1,
                "echo": True,
                "logprobs": 15,
                "temperature": 0,
            }

        async def one(i: int) -> None:
            answer = await backend.completions(body(i))
            # The scorer's reading of the answer, as the method does it (the same function):
            # whatever a lazy decode leaves for later is decoded here, inside the measurement.
            simulation = parse_prompt_logprobs_response(answer, prompt, EXCERPT, "m")
            assert not simulation.missing_positions, simulation.missing_positions

        await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))  # warm the pool
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(requests)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await http.aclose()
    return requests / seconds, cpu / requests


def bench(target: str, figure: float, limit: float, note: str) -> None:
    ratio = figure / limit
    print(
        "BENCH "
        + json.dumps(
            {
                "benchmark": "llm_client_throughput",
                "target": target,
                "figure": round(figure, 1),
                "unit": "req/s",
                "limit": round(limit, 1),
                "limit_kind": "min",
                "ratio": round(ratio, 3),
                "ok": ratio >= 1,
                "note": note,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="target time per measurement")
    args = parser.parse_args()
    answer = answer_bytes()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}; answer "
        f"{len(answer) / 1e3:.0f} KB ({len(compress_body(answer)) / 1e3:.0f} KB compressed)"
    )
    latency, concurrency = args.latency, args.concurrency
    limit = concurrency / latency
    requests = max(concurrency * 4, int(limit * TARGET * args.seconds))
    port = free_port()
    ready = multiprocessing.Event()
    child = multiprocessing.Process(target=serve, args=(port, latency, ready), daemon=True)
    child.start()
    ready.wait(30)
    base_url = f"http://127.0.0.1:{port}/v1"
    shape = (
        f"{len(answer) / 1e3:.0f} KB prompt-logprobs echoes, {latency * 1000:.0f} ms x "
        f"{concurrency} in flight (limit {limit:.0f} req/s), {requests} requests"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.sqlite3")
            client_rate, client_cpu = asyncio.run(
                measure(base_url, concurrency, requests, None, "client")
            )
            print(
                f"client alone: {client_rate:.1f} req/s ({client_rate / limit:.0%} of "
                f"{limit:.0f}); {client_cpu * 1000:.1f} ms CPU per answer "
                f"({DEFAULT_TRANSPORT} transport, the client's)"
            )
            for other in sorted(set(TRANSPORTS) - {DEFAULT_TRANSPORT}):  # for comparison
                rate, cpu = asyncio.run(
                    measure(base_url, concurrency, requests, None, other, other)
                )
                print(
                    f"client alone over the {other} transport: {rate:.1f} req/s "
                    f"({rate / limit:.0%}); {cpu * 1000:.1f} ms CPU per answer"
                )
            session_rate, session_cpu = asyncio.run(
                measure(base_url, concurrency, requests, store, "session")
            )
            cached = ResponseCache(store).count()
            print(
                f"through a session (cache + ledger): {session_rate:.1f} req/s "
                f"({session_rate / limit:.0%}); {session_cpu * 1000:.1f} ms CPU per answer; "
                f"{cached} answers cached"
            )
            store.close()
    finally:
        child.terminate()
        child.join()
    bench(
        f"LLM client alone, >= {TARGET:.0%} of concurrency/latency",
        client_rate,
        limit * TARGET,
        shape + "; HTTP + redaction + decoding + the scorer's parse of each answer",
    )
    bench(
        f"LLM session (cache + ledger), >= {TARGET:.0%} of concurrency/latency",
        session_rate,
        limit * TARGET,
        shape + "; + cache lookup, raw answer compressed and stored, usage ledger in SQLite",
    )
    bench(
        f"LLM session CPU ceiling (1 / client CPU per answer), >= {TARGET:.0%} of the limit",
        1 / session_cpu,
        limit * TARGET,
        shape + f"; {session_cpu * 1000:.1f} ms of client CPU per answer (all threads): the rate "
        "one free core sustains, whatever else the machine runs",
    )


if __name__ == "__main__":
    main()
