"""A fake batch engine: answers a requests JSONL (OpenAI Batch API input) through the fake
OpenAI-compatible server and writes the output JSONL, as `vllm run-batch -i IN -o OUT` does.

Each line's `body` is POSTed as it is to the server (`url` under the server's root), and the
answer is written as `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}`. Scripted faults: `expire` custom_ids are written as the Batch API's expired
lines (`error.code = "batch_expired"`, no response), `fail` ones as HTTP 500 lines.

    python -m tests.fake_engine -i requests.jsonl -o output.jsonl [--base-url URL]

Without `--base-url` it starts its own fake server with the oracle neuron of tests/synthetic.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.fake_openai import FakeOpenAI, FakeServer
from tests.synthetic import oracle


@dataclass
class EngineRun:
    """What one run of the engine did."""

    lines: int = 0
    answered: int = 0
    expired: int = 0
    failed: int = 0
    seconds: float = 0.0
    faults: dict[str, str] = field(default_factory=dict)


class FakeEngine:
    """Answers request files through an OpenAI-compatible server at `base_url` (threads)."""

    def __init__(self, base_url: str, *, workers: int = 8) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.root = parts.path.rstrip("/").removesuffix("/v1")
        self.workers = workers
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self._local.connection = connection
        return connection

    def _post(self, url: str, body: bytes) -> tuple[int, Any]:
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(
                    "POST", self.root + url, body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                return response.status, json.loads(response.read() or b"null")
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def answer(
        self,
        requests: Path,
        output: Path,
        *,
        expire: set[str] | None = None,
        fail: set[str] | None = None,
    ) -> EngineRun:
        """Answer every line of `requests` into `output` (in input order)."""
        started = time.perf_counter()
        run = EngineRun()
        expire = expire or set()
        fail = fail or set()

        def one(index_line: tuple[int, bytes]) -> bytes:
            index, raw = index_line
            line = json.loads(raw)
            key = line["custom_id"]
            out: dict[str, Any] = {"id": f"batch_req_{index}", "custom_id": key}
            if key in expire:
                out |= {
                    "response": None,
                    "error": {"code": "batch_expired", "message": "not run within 24h"},
                }
            elif key in fail:
                out |= {
                    "response": {
                        "status_code": 500,
                        "request_id": f"req_{index}",
                        "body": {"error": {"message": "scripted engine failure"}},
                    },
                    "error": None,
                }
            else:
                body = json.dumps(line["body"]).encode()
                status, answer = self._post(line["url"], body)
                out |= {
                    "response": {"status_code": status, "request_id": f"req_{index}", "body": answer},
                    "error": None,
                }
            return json.dumps(out).encode() + b"\n"

        with output.open("wb") as handle, ThreadPoolExecutor(self.workers) as pool:
            for window in _windows(enumerate(_lines(requests)), 256):  # memory stays flat
                for written in pool.map(one, window):
                    handle.write(written)
                    run.lines += 1
        run.expired = len(expire)
        run.failed = len(fail)
        run.answered = run.lines - run.expired - run.failed
        run.seconds = time.perf_counter() - started
        return run


def _windows(items: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    window: list[tuple[int, bytes]] = []
    for item in items:
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                yield raw


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.fake_engine -i IN.jsonl [-i ...] -o OUT.jsonl [--base-url URL]`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--input", action="append", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: start one)")
    parser.add_argument("--model", help="accepted for vllm run-batch's syntax; the body names it")
    args = parser.parse_args(argv)
    server = None
    if args.base_url is None:
        server = FakeServer(FakeOpenAI(neuron=oracle, explanation=" words with the letter e"))
        server.__enter__()
    try:
        engine = FakeEngine(args.base_url or server.base_url)  # type: ignore[union-attr]
        total = 0
        parts = []
        for index, path in enumerate(args.input):
            part = args.output if len(args.input) == 1 else args.output.with_suffix(f".{index}")
            total += engine.answer(path, part).lines
            parts.append(part)
        if len(parts) > 1:
            with args.output.open("wb") as out:
                for part in parts:
                    out.write(part.read_bytes())
                    part.unlink()
        print(f"answered {total} requests into {args.output}")
    finally:
        if server is not None:
            server.__exit__()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
