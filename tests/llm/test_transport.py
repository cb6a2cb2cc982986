"""The client's transport over real sockets: large answers read whole and unchanged, idle
keep-alive connections the server closed are noticed before reuse, one pool per connection."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from neuron_desk.core.transport import _BulkReadTransport, _ShardedTransport
from neuron_desk.llm.answers import raw_of
from neuron_desk.llm.client import OpenAICompatibleClient
from tests.fake_openai import starlette_json, vllm_prompt_logprobs_echo

pytestmark = pytest.mark.integration

BODY = {"model": "m", "prompt": "p", "max_tokens": 1, "echo": True, "logprobs": 15}


class RawServer:
    """An HTTP/1.1 server on a real socket answering every request with `answer`
    (Content-Length, keep-alive); with `close_after`, it closes each connection that many
    seconds after answering, without saying so (as a server's keep-alive timeout does)."""

    def __init__(self, answer: bytes, close_after: float | None = None) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
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


def test_each_connection_has_a_pool_of_its_own_and_the_limit_holds() -> None:
    answer = starlette_json({"choices": [{"text": "ok"}]})

    async def go() -> tuple[object, int, int]:
        with RawServer(answer) as server:
            async with OpenAICompatibleClient(server.base_url, max_concurrent=16) as c:
                await asyncio.gather(*(c.completions(BODY) for _ in range(64)))
                return c._http._transport, c.stats.max_in_flight, server.connections

    transport, in_flight, connections = asyncio.run(go())
    assert isinstance(transport, _ShardedTransport)
    assert len(transport._shards) == 16
    assert all(isinstance(shard, _BulkReadTransport) for shard in transport._shards)
    assert in_flight == 16 and connections <= 16
