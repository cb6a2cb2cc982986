"""The HTTP transport every client of the app uses (the LLM client, the dataset sources).

httpx's own transport is one httpcore connection pool reading 64 KiB at a time. For many
large answers at once (640 KB prompt-logprobs echoes, 420 KB explanation files) that costs
more CPU than the HTTP itself: httpcore scans every queued request against every connection
and polls each idle one whenever a request starts or ends (quadratic in the pool size), and a
640 KB answer takes 20 trips through httpcore, h11 and AnyIO. Here each connection gets a pool
of its own, reads take whatever the socket holds (up to 1 MiB), and the idle check polls the
socket. Requests, responses and errors stay httpx's own.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx

POOL_SHARD_SIZE = 1
"""Connections per httpcore pool: its bookkeeping (every queued request scanned against every
connection, and each idle one polled, whenever a request starts or ends) grows with the
square of the pool size, so each connection gets a pool of its own."""
READ_SIZE = 1 << 20
"""Bytes a connection asks its socket for at once (httpcore asks for 64 KiB)."""


def pooled_transport(max_concurrent: int) -> httpx.AsyncBaseTransport:
    """The transport: one connection pool, or several small ones for more than one request
    at a time; one TLS context for them all."""
    ssl_context = httpx.create_ssl_context()
    if max_concurrent <= POOL_SHARD_SIZE:
        return _BulkReadTransport(max_concurrent, ssl_context)
    return _ShardedTransport(max_concurrent, POOL_SHARD_SIZE, ssl_context)


class _BulkReadTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP transport over an httpcore pool whose connections read large answers in
    few steps (`_BulkReadBackend`). Only the pool differs: requests, responses and errors are
    httpx's own."""

    def __init__(self, connections: int, ssl_context: ssl.SSLContext) -> None:
        # httpx's __init__ would build a pool (and a TLS context, ~40 ms) only to drop it.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=httpx.Limits().keepalive_expiry,
            network_backend=_BulkReadBackend(),
        )


class _BulkReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio (AnyIO) network backend with `_BulkReadStream`s."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _BulkReadStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - the client connects over TCP
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _BulkReadStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _BulkReadStream(httpcore.AsyncNetworkStream):
    """A connection that reads whatever the socket holds, up to `READ_SIZE`, per read: a
    640 KB answer arrives in ~5 reads instead of 20 (each read is a trip through httpcore,
    h11 and AnyIO). Whether an idle connection was closed by the server ("is_readable", asked
    for every idle connection whenever a request starts or ends) polls the socket, found once,
    instead of rebuilding AnyIO's socket attributes (a getpeername call) each time."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: Any = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max(max_bytes, READ_SIZE), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _BulkReadStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info != "is_readable":
            return self._stream.get_extra_info(info)
        if self._socket is None:
            self._socket = self._stream.get_extra_info("socket")
        return _socket_readable(self._socket)


def _socket_readable(sock: socket.socket | None) -> bool:
    """Whether a socket has data or an end of file to read (an idle keep-alive connection
    the server closed); a closed or unknown socket counts as readable (it is dropped)."""
    if sock is None or sock.fileno() < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover - Windows


class _ShardedTransport(httpx.AsyncBaseTransport):
    """Several small connection pools behind one transport, each request to the least busy.

    httpcore scans every queued request against every connection whenever a request starts
    or ends, so one pool of 64 connections spends more CPU on bookkeeping than on HTTP
    (measured: 105 requests/s at 64 in flight and 100 ms latency, against 536 with pools of
    8). The client stays one `AsyncClient`; only its transport is split.
    """

    def __init__(self, max_concurrent: int, shard_size: int, ssl_context: ssl.SSLContext) -> None:
        count = -(-max_concurrent // shard_size)
        per_shard = -(-max_concurrent // count)
        self._shards = [_BulkReadTransport(per_shard, ssl_context) for _ in range(count)]
        self._load = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send on the pool with the fewest requests in progress."""
        index = min(range(len(self._shards)), key=self._load.__getitem__)
        self._load[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._load[index] -= 1
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CountedStream(response.stream, self._load, index),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pool."""
        for shard in self._shards:
            await shard.aclose()


class _CountedStream(httpx.AsyncByteStream):
    """A response body that frees its pool's slot in the load count when closed."""

    def __init__(self, stream: Any, load: list[int], index: int) -> None:
        self._stream = stream
        self._load = load
        self._index = index
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._open:
                self._open = False
                self._load[self._index] -= 1
