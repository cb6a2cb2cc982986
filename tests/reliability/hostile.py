"""A hostile dataset mirror on 127.0.0.1: real HTTP over sockets, each path its own attack.

Attacks (by path under /data/): `files` bodies served as they are (optionally gzip-encoded),
`endless` a chunked body that never ends, `bombs` a gzip body that inflates to many bytes,
`trickle` one byte every few seconds, `loop` a redirect to itself, `bad_gzip` a body that
claims gzip and is not. Used by the reliability tests (small sizes) and the benchmarks.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def gzip_bomb(inflated_bytes: int) -> bytes:
    """A gzip body of zeros that inflates to `inflated_bytes` (compressed ~1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    out = []
    left = inflated_bytes
    while left > 0:
        out.append(packer.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    out.append(packer.flush())
    return b"".join(out)


@dataclass
class Attacks:
    """What each path does."""

    files: dict[str, bytes] = field(default_factory=dict)
    endless: set[str] = field(default_factory=set)
    endless_bytes: int | None = None
    """Where an `endless` body ends (None: never)."""
    bombs: dict[str, bytes] = field(default_factory=dict)
    trickle: dict[str, float] = field(default_factory=dict)
    """Path -> seconds between bytes."""
    loop: set[str] = field(default_factory=set)
    bad_gzip: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)


class HostileMirror:
    """Serves `attacks` at http://127.0.0.1:<port>/data/; unknown paths answer 404."""

    def __init__(self, attacks: Attacks | None = None) -> None:
        self.attacks = attacks or Attacks()
        self.stop = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    mirror._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/data"

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        relative = h.path.removeprefix("/data/")
        a = self.attacks
        a.requests.append(relative)
        if relative in a.loop:
            h.send_response(302)
            h.send_header("Location", h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif relative in a.endless:
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            block = b"[" * 65536
            line = f"{len(block):x}\r\n".encode() + block + b"\r\n"
            sent = 0
            while not self.stop.is_set() and (a.endless_bytes is None or sent < a.endless_bytes):
                h.wfile.write(line)
                sent += len(block)
            h.wfile.write(b"0\r\n\r\n")
        elif relative in a.bombs:
            self._send(h, a.bombs[relative], gzip=True)
        elif relative in a.bad_gzip:
            self._send(h, b"this is not gzip at all" * 10, gzip=True)
        elif relative in a.trickle:
            h.send_response(200)
            h.send_header("Content-Length", "1000000")
            h.end_headers()
            while not self.stop.is_set():
                h.wfile.write(b" ")
                h.wfile.flush()
                if self.stop.wait(a.trickle[relative]):
                    break
        elif relative in a.files:
            self._send(h, a.files[relative])
        else:
            self._send(h, b'{"error": 404}', status=404)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, body: bytes, *, status: int = 200, gzip: bool = False
    ) -> None:
        h.send_response(status)
        if gzip:
            h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def __enter__(self) -> HostileMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        time.sleep(0.05)
        self._server.shutdown()
        self._server.server_close()
