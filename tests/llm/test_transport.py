"""The client's transport over real sockets: large answers read whole and unchanged, idle
keep-alive connections the server closed are noticed before reuse, one pool per connection."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_desk.core.errors import BackendUnavailable
from neuron_desk.core.transport import _BulkReadTransport, _ShardedTransport
from neuron_desk.core.wire import LeanTransport
from neuron_desk.llm.answers import raw_of
from neuron_desk.llm.client import (
    NO_RETRY,
    TRANSPORTS,
    OpenAICompatibleClient,
    request_content,
)
from tests.fake_openai import starlette_json, vllm_prompt_logprobs_echo
from tests.socket_server import ConnectionServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("http_transport")]

BODY = {"model": "m", "prompt": "p", "max_tokens": 1, "echo": True, "logprobs": 15}


class RawServer(ConnectionServer):
    """An HTTP/1.1 server on a real socket answering every request with `answer`
    (Content-Length, keep-alive); with `close_after`, it closes each connection that many
    seconds after answering, without saying so (as a server's keep-alive timeout does)."""

    def __init__(self, answer: bytes, close_after: float | None = None) -> None:
        self.answer = answer
        self.close_after = close_after
        self.requests = 0
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(self.answer)}\r\n\r\n".encode()
                    + self.answer
                )
                if self.close_after is not None:
                    time.sleep(self.close_after)
                    conn.shutdown(socket.SHUT_RDWR)
                    return


@pytest.fixture
def echo() -> Iterator[bytes]:
    yield starlette_json(vllm_prompt_logprobs_echo("x" * 5700))


def test_a_640_kb_answer_arrives_whole_and_unchanged(echo: bytes) -> None:
    assert len(echo) > 600_000

    async def go() -> list[bytes | None]:
        with RawServer(echo) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=4) as c:
                answers = await asyncio.gather(*(c.completions(BODY) for _ in range(8)))
                assert c.stats.retries == 0
        return [raw_of(a) for a in answers]

    assert asyncio.run(go()) == [echo] * 8


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    """The pool asks each idle connection whether the server closed it before reusing it;
    a dead one reused would fail the request and cost a retry."""
    answer = starlette_json({"choices": [{"text": "ok"}]})

    async def go() -> tuple[int, int, int]:
        with RawServer(answer, close_after=0.05) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=1) as c:
                for _ in range(3):
                    await c.completions(BODY)
                    await asyncio.sleep(0.3)  # the server has closed the connection by now
                return c.stats.retries, server.connections, server.requests

    retries, connections, requests = asyncio.run(go())
    assert (retries, connections, requests) == (0, 3, 3)


def test_the_connection_limit_holds_and_httpcore_gets_a_pool_per_connection(
    http_transport: str,
) -> None:
    answer = starlette_json({"choices": [{"text": "ok"}]})

    async def go() -> tuple[object, int, int]:
        with RawServer(answer) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=16) as c:
                await asyncio.gather(*(c.completions(BODY) for _ in range(64)))
                return c._http._transport, c.stats.max_in_flight, server.connections

    transport, in_flight, connections = asyncio.run(go())
    assert in_flight == 16 and connections <= 16
    if http_transport == "lean":
        assert isinstance(transport, LeanTransport)
        return
    assert isinstance(transport, _ShardedTransport)
    assert len(transport._shards) == 16
    assert all(isinstance(shard, _BulkReadTransport) for shard in transport._shards)


# --- what the lean transport must do for POSTs, against httpx's own (both, same server) ---


class SocketServer(ConnectionServer):
    """A server on a real socket running `handle(conn, server)` for each connection in a
    thread; `requests` counts the requests it read whole."""

    def __init__(self, handle: Callable[[socket.socket, SocketServer], None]) -> None:
        self.handle = handle
        self.requests = 0
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handle(conn, self)

    def read_request(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Read one request (head and Content-Length body) into `bodies`; False at the end."""
        while b"\r\n\r\n" not in buffer:
            data = conn.recv(1 << 20)
            if not data:
                return False
            buffer += data
        end = buffer.index(b"\r\n\r\n")
        head = bytes(buffer[:end]).lower()
        self.heads.append(head)
        del buffer[: end + 4]
        length = 0
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(buffer) < length:
            data = conn.recv(1 << 20)
            if not data:
                return False
            buffer += data
        self.bodies.append(bytes(buffer[:length]))
        del buffer[:length]
        self.requests += 1
        return True


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n"
OK += b'{"choices":[{"text":"ok"}]}'


def answer_all(conn: socket.socket, server: SocketServer) -> None:
    buffer = bytearray()
    while server.read_request(conn, buffer):
        conn.sendall(OK)


def make_transport(kind: str, connections: int) -> Any:
    return TRANSPORTS[kind](connections)


def test_a_large_post_body_arrives_whole(http_transport: str) -> None:
    body = {"model": "m", "prompt": "é" + "0123456789" * 300_000, "echo": True}  # 3 MB

    async def go() -> None:
        with SocketServer(answer_all) as server:
            async with OpenAICompatibleClient(
                f"http://127.0.0.1:{server.port}/v1", retry=NO_RETRY
            ) as c:
                assert (await c.completions(body))["choices"] == [{"text": "ok"}]
                assert (await c.completions(BODY))["choices"] == [{"text": "ok"}]  # kept
            assert server.bodies == [request_content(body), request_content(BODY)]

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["lean", "httpcore"])
def test_a_post_that_may_have_reached_the_server_is_not_sent_again(kind: str) -> None:
    """A kept connection the server closes after reading the request, without an answer:
    the POST fails (RemoteProtocolError), it is not sent again on a new connection."""

    def answer_once_then_drop(conn: socket.socket, server: SocketServer) -> None:
        buffer = bytearray()
        if server.read_request(conn, buffer):
            conn.sendall(OK)
        server.read_request(conn, buffer)  # the second request read, then the connection closed

    async def go() -> tuple[str, int]:
        with SocketServer(answer_once_then_drop) as server:
            url = f"http://127.0.0.1:{server.port}/v1/completions"
            async with httpx.AsyncClient(transport=make_transport(kind, 1)) as client:
                assert (await client.post(url, content=b'{"a":1}')).status_code == 200
                try:
                    await client.post(url, content=b'{"a":2}')
                except httpx.TransportError as exc:
                    failure = type(exc).__name__
                else:
                    failure = "none"
                return failure, server.requests

    assert asyncio.run(go()) == ("RemoteProtocolError", 2)


@pytest.mark.parametrize("kind", ["lean", "httpcore"])
def test_a_post_the_server_never_reads_times_out_writing(kind: str) -> None:
    stop = threading.Event()

    def never_read(conn: socket.socket, server: SocketServer) -> None:
        stop.wait(10)

    async def go() -> str:
        with SocketServer(never_read) as server:
            url = f"http://127.0.0.1:{server.port}/v1/completions"
            timeout = httpx.Timeout(5.0, write=0.3)
            async with httpx.AsyncClient(transport=make_transport(kind, 1), timeout=timeout) as c:
                try:
                    await c.post(url, content=b"x" * (64 << 20))
                except httpx.TransportError as exc:
                    return type(exc).__name__
                finally:
                    stop.set()
        return "none"

    started = time.monotonic()
    assert asyncio.run(go()) == "WriteTimeout"
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("kind", ["lean", "httpcore"])
def test_no_free_connection_in_time_is_a_pool_timeout(kind: str) -> None:
    release = threading.Event()

    def slow(conn: socket.socket, server: SocketServer) -> None:
        buffer = bytearray()
        while server.read_request(conn, buffer):
            release.wait(10)
            conn.sendall(OK)

    async def go() -> str:
        with SocketServer(slow) as server:
            url = f"http://127.0.0.1:{server.port}/v1/completions"
            timeout = httpx.Timeout(5.0, pool=0.2)
            async with httpx.AsyncClient(transport=make_transport(kind, 1), timeout=timeout) as c:
                first = asyncio.create_task(c.post(url, content=b"{}"))
                await asyncio.sleep(0.1)
                try:
                    await c.post(url, content=b"{}")
                except httpx.TransportError as exc:
                    return type(exc).__name__
                finally:
                    release.set()
                    await first
        return "none"

    assert asyncio.run(go()) == "PoolTimeout"


def test_https_checks_the_certificate_and_the_host_name(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    def tls(conn: socket.socket, server: SocketServer) -> None:
        with contextlib.suppress(ssl.SSLError):  # a client refusing the certificate
            answer_all(served.wrap_socket(conn, server_side=True), server)

    trusted = ssl.create_default_context(cafile=str(cert))

    async def post(host: str, context: ssl.SSLContext | None) -> str:
        transport = LeanTransport(2, ssl_context=context) if context else LeanTransport(2)
        async with OpenAICompatibleClient(
            f"https://{host}:{server.port}/v1", transport=transport, retry=NO_RETRY
        ) as c:
            try:
                return str((await c.completions(BODY))["choices"][0]["text"])
            except BackendUnavailable as exc:
                return str(exc)
            finally:
                await transport.aclose()

    with SocketServer(tls) as server:
        assert asyncio.run(post("localhost", trusted)) == "ok"
        assert server.bodies == [request_content(BODY)]
        wrong_name = asyncio.run(post("127.0.0.1", trusted))  # the certificate is localhost's
        untrusted = asyncio.run(post("localhost", None))  # httpx's default trust (certifi)
    assert "could not reach" in wrong_name and "ConnectError" in wrong_name
    assert "could not reach" in untrusted and "ConnectError" in untrusted
    assert server.requests == 1


def test_a_client_used_again_from_another_event_loop_opens_new_connections(
    http_transport: str,
) -> None:
    """Connections kept by one `asyncio.run` are not used (nor fail) in the next one."""
    if http_transport == "httpcore":
        pytest.skip("httpcore's pool fails here: its kept connection belongs to a closed loop")

    async def ask(c: OpenAICompatibleClient) -> object:
        return (await c.completions(BODY))["choices"]

    with SocketServer(answer_all) as server:
        c = OpenAICompatibleClient(f"http://127.0.0.1:{server.port}/v1", retry=NO_RETRY)
        assert asyncio.run(ask(c)) == [{"text": "ok"}]
        assert asyncio.run(ask(c)) == [{"text": "ok"}]
        asyncio.run(c.aclose())
        assert server.requests == 2 and c.stats.retries == 0


def test_a_streamed_request_body_is_refused_not_sent() -> None:
    async def pieces() -> Any:
        yield b'{"a":'
        yield b"1}"

    async def go() -> str:
        with SocketServer(answer_all) as server:
            url = f"http://127.0.0.1:{server.port}/v1/completions"
            async with httpx.AsyncClient(transport=LeanTransport(1)) as client:
                try:
                    await client.post(url, content=pieces())
                except httpx.UnsupportedProtocol as exc:
                    assert server.requests == 0
                    return str(exc)
        return "sent"

    assert "streamed request body" in asyncio.run(go())


def test_requests_carry_what_httpx_s_client_would_send(http_transport: str) -> None:
    """The client builds each request as its `httpx.AsyncClient` would (the same head), and
    a base URL with a user name and password gets httpx's basic auth."""

    async def go(base: str, key: str | None) -> tuple[list[bytes], list[bytes]]:
        with SocketServer(answer_all) as server:
            url = base.format(port=server.port)
            async with OpenAICompatibleClient(url, key, retry=NO_RETRY) as c:
                await c.completions(BODY)
                async with httpx.AsyncClient(headers=c._headers) as plain:
                    await plain.post(
                        f"http://127.0.0.1:{server.port}/v1/completions",
                        content=request_content(BODY),
                        headers={"Content-Type": "application/json"},
                    )
            return server.heads, server.bodies

    (ours, theirs), bodies = asyncio.run(go("http://127.0.0.1:{port}/v1", "sk-abc"))
    assert bodies[0] == bodies[1] == request_content(BODY)
    assert ours.split(b"\r\n")[0] == b"post /v1/completions http/1.1"
    assert sorted(ours.split(b"\r\n")[1:]) == sorted(theirs.split(b"\r\n")[1:])
    assert b"authorization: bearer sk-abc" in ours and b"user-agent: python-httpx" in ours
    (ours, _theirs), _ = asyncio.run(go("http://user:pw@127.0.0.1:{port}/v1", None))
    assert b"authorization: basic dxnlcjpwdw==" in ours  # base64 of "user:pw", lowercased
