"""Throughput of the LLM client with real-size answers against a server with a fixed latency.

    python tests/benchmarks/llm_client_throughput.py [--latency 0.1] [--concurrency 16] [--seconds 4]

The server is a separate process (as a real vLLM is another process or machine: it must not
share the client's GIL or its core), asyncio, HTTP/1.1 keep-alive. It answers every request
after `latency` seconds as vLLM's OpenAI server does for a non-streaming /completions: FastAPI's
`JSONResponse` (Starlette: compact `json.dumps(..., ensure_ascii=False, allow_nan=False,
separators=(",", ":"))`, one body with `Content-Length`, no chunked encoding) sent by uvicorn
(`date`, `server`, `content-length`, `content-type` headers). The answer is a prompt-logprobs
echo of a scoring prompt: /completions with `echo` and `logprobs=15` returns 15 alternatives
with full-precision logprobs at every prompt position, ~644 KB of compact JSON per answer
(`tests.fake_openai.vllm_prompt_logprobs_echo`), with `usage`. The client sends distinct
/completions requests shaped like the prompt-logprobs scorer's (a ~5.7 KB prompt),
`concurrency` at a time; the best possible rate is concurrency / latency requests per second
(160/s at 100 ms x 16).

Measured twice: the bare client (HTTP, redaction, orjson decoding), and through an
`LLMSession` as runs use it (response cache lookup, the raw answer compressed and written to a
SQLite store, usage ledger written per request). Target (issue 12): >= 70% of the limit.
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
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from neuron_desk.data.store import Store
from neuron_desk.llm.cache import ResponseCache, compress_body
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.session import LLMSession
from tests.fake_openai import starlette_json, vllm_prompt_logprobs_echo

TARGET = 0.7
"""The session's rate must reach this share of concurrency / latency."""
PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing "
    "in a short document. Look at an explanation of what the neuron does, and try to predict "
    "its activations on each token.\n\n"
) + "".join(f" token{i}\tunknown\n" for i in range(312))
"""A scoring prompt of ~5.7 KB, as the prompt-logprobs simulator sends (few-shot and 64
tokens): its echo is ~644 KB of compact JSON."""


def answer_bytes() -> bytes:
    """The ~644 KB answer every request gets, rendered as vLLM's JSONResponse renders it."""
    return starlette_json(vllm_prompt_logprobs_echo(PROMPT))


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
    base_url: str, concurrency: int, requests: int, store: Store | None, tag: str
) -> tuple[float, float]:
    """Requests per second for `requests` distinct requests at `concurrency` (answers are
    dropped as they come, as a scorer does once it has read its positions), and the client's
    CPU seconds per request (all its threads: the cache compresses and writes in a worker)."""
    async with OpenAICompatibleClient(base_url, max_concurrent=concurrency) as client:
        backend = LLMSession(client, store=store) if store is not None else client

        def body(i: int) -> dict[str, object]:
            return {
                "model": "m",
                "prompt": f"{tag} {i}\n{PROMPT}",
                "max_tokens": 1,
                "echo": True,
                "logprobs": 15,
                "temperature": 0,
            }

        async def one(i: int) -> None:
            answer = await backend.completions(body(i))
            assert answer["choices"], answer

        await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))  # warm the pool
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(requests)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
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
                f"{limit:.0f}); {client_cpu * 1000:.1f} ms CPU per answer"
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
        shape + "; HTTP + redaction + orjson",
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
