"""A dataset mirror on 127.0.0.1: a folder in the public layout served over real HTTP.

Faults are scripted per path: a status code to answer first (once), a delay, a truncated body;
`latency_s` delays every answer (a remote host). The listen backlog is a normal one (128, not
http.server's 5, which makes clients connecting at once wait a second for a retried SYN).
`keep_alive` answers in HTTP/1.1 with persistent connections, as real hosts do.

`MirrorProcess` runs the mirror in a process of its own (`python -m tests.data.mirror`): a
real mirror is another machine, so its sending must not share the client's GIL or its core's
time slices in a benchmark of the client. It serves as a static file server does
(`_StaticServer`: asyncio, HTTP/1.1 keep-alive, each file's bytes read once and kept), with
only a latency before every answer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.model import (
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSimulation,
    TokenLookupTableSummaryOfNeuron,
)
from tests.synthetic import neuron_record


@dataclass
class Faults:
    """Per-path scripted faults (paths relative to the dataset root)."""

    fail_once: dict[str, int] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    truncate: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    """A delay before every answer (a distant host)."""
    in_flight: int = 0
    max_in_flight: int = 0
    """The most requests the mirror was answering at the same time."""


def write_public_layout(
    root: Path,
    neurons: list[tuple[int, int]],
    record_of: Callable[[int, int], NeuronRecord] | None = None,
) -> None:
    """Write activation records (`record_of(layer, neuron)`, default a small synthetic one),
    explanations and top tokens for each neuron."""
    for layer, neuron in neurons:
        if record_of is not None:
            record = record_of(layer, neuron)
        else:
            record = neuron_record(seed=layer * 1000 + neuron)
        record.neuron_id = NeuronId(layer, neuron)
        _write(root / f"collated-activations/{layer}/{neuron}.json", codec.dumps(record))
        results = NeuronSimulationResults(
            NeuronId(layer, neuron),
            [
                ScoredExplanation(
                    f" words with the letter e ({layer}:{neuron})", ScoredSimulation([], 0.42)
                )
            ],
        )
        _write(root / f"explanations/{layer}/{neuron}.jsonl", codec.dumps(results) + "\n")
        tokens = TokenLookupTableSummaryOfNeuron([" eager", " engineer"], [4.0, None])
        _write(root / f"related-tokens/activation-based/{layer}/{neuron}.json", codec.dumps(tokens))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # a normal listen backlog (http.server's default is 5)
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client closing its kept-alive connection is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Mirror:
    """Serves `root` at http://127.0.0.1:<port>/data/ with scripted faults."""

    def __init__(
        self, root: Path, faults: Faults | None = None, *, keep_alive: bool = False
    ) -> None:
        self.root = root
        self.faults = faults or Faults()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                mirror._serve(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/data"

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        faults = self.faults
        with self._lock:
            faults.in_flight += 1
            faults.max_in_flight = max(faults.max_in_flight, faults.in_flight)
        try:
            time.sleep(faults.latency_s)
            self._answer(handler)
        finally:
            with self._lock:
                faults.in_flight -= 1

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        relative = handler.path.removeprefix("/data/")
        faults = self.faults
        faults.requests.append(relative)
        if relative in faults.delay_s:
            time.sleep(faults.delay_s[relative])
        status = faults.fail_once.pop(relative, None)
        path = self.root / relative
        if status is None and not path.is_file():
            status = 404
        body = json.dumps({"error": status}).encode() if status else path.read_bytes()
        if relative in faults.truncate and not status:
            body = body[: len(body) // 2]
        try:
            handler.send_response(status or 200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def __enter__(self) -> Mirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where `python -m tests.data.mirror` is found)."""


class MirrorProcess:
    """The mirror of `root` in its own process, answering every request after `latency_s`.

    `base_url` is known once entered; `max_in_flight` (the most requests it answered at the
    same time) once left.
    """

    def __init__(self, root: Path, latency_s: float = 0.0, *, keep_alive: bool = True) -> None:
        self.root = root
        self.latency_s = latency_s
        self.keep_alive = keep_alive
        self.base_url = ""
        self.max_in_flight = 0
        self._child: subprocess.Popen[str] | None = None

    def __enter__(self) -> MirrorProcess:
        command = [sys.executable, "-m", "tests.data.mirror", str(self.root)]
        command += ["--latency", str(self.latency_s)] + (["--keep-alive"] if self.keep_alive else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self._child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line.startswith("http://"):
            self._child.kill()
            raise RuntimeError(f"the mirror process did not start: {line!r}")
        self.base_url = line.strip()
        return self

    @property
    def pid(self) -> int:
        """The mirror process's id (once entered)."""
        assert self._child is not None
        return self._child.pid

    def __exit__(self, *exc: object) -> None:
        child = self._child
        assert child is not None and child.stdin is not None and child.stdout is not None
        try:
            child.stdin.close()  # tells it to stop
            report = child.stdout.readline()
            if report:
                self.max_in_flight = int(json.loads(report)["max_in_flight"])
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


class _StaticServer:
    """The mirror process's server: HTTP/1.1 on an asyncio loop, each file read once and its
    bytes kept (as a static file server answers from the page cache with sendfile), every
    answer sent `latency_s` after its request came. A real mirror spends microseconds of CPU
    per file; http.server's thread per connection, header parsing and a read per request
    spent ~0.5-1 ms, on the same two cores as the client measured."""

    def __init__(self, root: Path, latency_s: float, keep_alive: bool) -> None:
        self.root = root.resolve()
        self.latency_s = latency_s
        self.keep_alive = keep_alive
        self.in_flight = 0
        self.max_in_flight = 0
        self._files: dict[str, bytes | None] = {}
        self._connections: dict[Any, Any] = {}
        """Each open connection's writer and the task serving it."""

    def _body(self, relative: str) -> bytes | None:
        if relative not in self._files:
            path = (self.root / relative).resolve()
            inside = path.is_relative_to(self.root) and path.is_file()
            self._files[relative] = path.read_bytes() if inside else None
        return self._files[relative]

    async def serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        version = b"HTTP/1.1" if self.keep_alive else b"HTTP/1.0"
        self._connections[writer] = asyncio.current_task()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await asyncio.sleep(self.latency_s)
                    target = head.split(b" ", 2)[1].decode("latin-1")
                    body = self._body(target.removeprefix("/data/"))
                    status = b"200 OK" if body is not None else b"404 Not Found"
                    body = body if body is not None else b'{"error": 404}'
                    writer.write(
                        b"%s %s\r\nContent-Length: %d\r\n\r\n" % (version, status, len(body))
                    )
                    writer.write(body)
                    await writer.drain()
                finally:
                    self.in_flight -= 1
                if not self.keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def close_connections(self) -> None:
        """Close every connection and let its task end (the clients see them closed)."""
        import asyncio

        tasks = list(self._connections.values())
        for writer in list(self._connections):
            writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)


def _serve_until_stdin_closes() -> None:
    import asyncio

    parser = argparse.ArgumentParser(description="Serve a folder as a dataset mirror.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--keep-alive", action="store_true")
    args = parser.parse_args()
    server = _StaticServer(args.root, args.latency, args.keep_alive)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, backlog=128)
        port = listening.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}/data", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it (or ends)
        print(json.dumps({"max_in_flight": server.max_in_flight}), flush=True)
        listening.close()
        await server.close_connections()

    asyncio.run(run())


if __name__ == "__main__":
    _serve_until_stdin_closes()
