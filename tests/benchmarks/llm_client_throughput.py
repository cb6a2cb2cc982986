"""Throughput of the LLM client against a local server that answers after a fixed latency.

    python tests/benchmarks/llm_client_throughput.py [--latency 0.02 0.1] [--concurrency 1 4 16 64]

The server (a separate process, asyncio, HTTP/1.1 keep-alive) answers every chat request
after `latency` seconds. With `c` requests in flight the best possible rate is c / latency
requests per second; the table shows what the client achieves, alone and through an
`LLMSession` (response cache lookups and writes, usage ledger, all in a SQLite store).
"""

from __future__ import annotations

import argparse
import asyncio
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
from neuron_desk.llm.cache import ResponseCache
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.session import LLMSession

ANSWER = json.dumps(
    {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a neuron"}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 3},
    }
).encode()


def serve(port: int, latency: float, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """The latency server (runs in a child process)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(latency)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(ANSWER)}\r\n\r\n".encode()
                    + ANSWER
                )
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


async def measure(base_url: str, concurrency: int, requests: int, store: Store | None) -> float:
    """Requests per second for `requests` distinct requests at `concurrency`."""
    async with OpenAICompatibleClient(base_url, max_concurrent=concurrency) as client:
        backend = LLMSession(client, store=store) if store is not None else client
        bodies = [
            {"model": "m", "messages": [{"role": "user", "content": f"request {i}"}]}
            for i in range(requests)
        ]
        await backend.chat_completions({"model": "m", "messages": [], "warm": True})
        started = time.perf_counter()
        await asyncio.gather(*(backend.chat_completions(b) for b in bodies))
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.02, 0.1])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=1.5, help="target time per cell")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(
        f"{'latency':>8} {'conc':>5} {'requests':>8} {'limit/s':>9} {'client/s':>9} "
        f"{'eff':>5} {'session/s':>10} {'eff':>5}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.sqlite3")
        for latency in args.latency:
            port = free_port()
            ready = multiprocessing.Event()
            child = multiprocessing.Process(target=serve, args=(port, latency, ready), daemon=True)
            child.start()
            ready.wait(10)
            base_url = f"http://127.0.0.1:{port}/v1"
            try:
                for concurrency in args.concurrency:
                    limit = concurrency / latency
                    requests = max(concurrency * 2, int(limit * args.seconds))
                    client_rate = asyncio.run(measure(base_url, concurrency, requests, None))
                    session_rate = asyncio.run(measure(base_url, concurrency, requests, store))
                    ResponseCache(store).clear()
                    print(
                        f"{latency * 1000:>6.0f}ms {concurrency:>5} {requests:>8} {limit:>9.1f} "
                        f"{client_rate:>9.1f} {client_rate / limit:>5.0%} "
                        f"{session_rate:>10.1f} {session_rate / limit:>5.0%}"
                    )
            finally:
                child.terminate()
                child.join()
        store.close()


if __name__ == "__main__":
    main()
