"""A lean HTTP/1.1 transport for httpx: the checker processes' GETs and the LLM client's POSTs.

Through httpcore, h11 and AnyIO a large body costs ~1-5 ms of CPU (a 420 KB file in a checker
process; ~2.3 ms for a 653 KB prompt-logprobs echo in the LLM client: reads through three
layers of streams, an AnyIO cancel scope per read, h11's event machinery); the socket's own
work is ~0.3 ms. `LeanTransport` is an `httpx.AsyncBaseTransport` that speaks HTTP/1.1
straight from an `asyncio.Protocol` (a body arrives in the loop's 256 KiB reads, handed on as
they come). Everything above the wire stays httpx's and its callers': the client builds the
request and its headers, follows redirects (or not), decodes content encodings; the callers
keep their retries, size caps, time limits and status rules.

What the transport does itself, as httpcore does: the request's connect, read, write and pool
timeouts (`httpx.ConnectTimeout`, `ReadTimeout`, `WriteTimeout`, `PoolTimeout`); keep-alive
connections per host (at most `max_connections` in use, idle ones dropped after
`keepalive_expiry` or once the server closed them: an idle connection's socket is polled
before it is used again, as httpcore polls it); TLS with the given context (httpx's default:
certifi, certificate and hostname checked); request bodies of known length (`Content-Length`:
what httpx sends for bytes; a streamed, chunked request body is refused); response bodies by
Content-Length, chunked, or until the server closes; httpx's errors for everything that goes
wrong (`ConnectError`, `ReadError`, `RemoteProtocolError`, ...).

A request is never sent twice when it may have reached the server, except a GET or HEAD
(which change nothing) on a kept connection that ended before any byte of an answer came: sent
again once on a new connection. A POST whose kept connection ends so fails with
`RemoteProtocolError` ("Server disconnected without sending a response."), as through
httpcore; its caller decides (the LLM client retries connection errors as it always did).
Proxies: none, as httpx with a transport of its caller's (the environment's proxy variables
are honoured by httpx only for the transports it builds itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from neuron_desk.core.transport import _socket_readable

READ_PAUSE_BYTES = 1 << 20
"""Received bytes not yet taken by the reader above which the socket is not read (bounded
memory whatever the server sends; the source's cap is checked as the body is taken)."""
HEAD_MAX_BYTES = 64 * 1024
"""The longest response head (status line and headers) accepted."""
KEEPALIVE_EXPIRY_S = 5.0
"""How long an idle connection is kept (httpx's default)."""

_NO_BODY_STATUS = frozenset({204, 304})
_SENT_AGAIN = frozenset({"GET", "HEAD"})
"""Methods sent again on a new connection when a kept one ended before any byte of an answer
came (they change nothing at the server); any other method is sent once."""
Host = tuple[str, str, int]
"""(scheme, host, port): the connections kept for one are used again for it."""


@dataclass(frozen=True)
class _Head:
    """A response's status line and headers, and how its body is delimited."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    framing: str
    """"none", "length" (`length` bytes), "chunked" or "close" (until the server closes)."""
    length: int
    reusable: bool
    """Whether the connection may carry another request once the body is read."""


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio protocols, keep-alive connections pooled per host."""

    def __init__(
        self,
        max_connections: int,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] = httpx.create_ssl_context,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_S,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._ssl = ssl_context
        """The TLS context, or how to make it when the first https URL is asked for."""
        self._expiry = keepalive_expiry
        self._idle: dict[Host, list[_Connection]] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if not isinstance(self._ssl, ssl.SSLContext):
            self._ssl = self._ssl()
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return the response with its body still to be read."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        timeouts = request.extensions.get("timeout", {})
        key: Host = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free in time", request=request) from None
        connection = None
        try:
            sent = _request_head(request) + await request.aread()
            connection = self._kept(key)
            head = None
            if connection is not None:  # None: the server had closed it; once on a new one
                head = await connection.exchange(sent, request, timeouts, kept=True)
                if head is None and request.method not in _SENT_AGAIN:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
            if connection is None or head is None:
                connection = await self._connect(key, request, timeouts)
                head = await connection.exchange(sent, request, timeouts, kept=False)
            assert head is not None
        except BaseException:  # an error, or cancelled: an answer half read is not kept
            if connection is not None:
                connection.close()
            self._slots.release()
            raise
        done = self._done(key, connection, head.reusable)
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_Body(connection, head, request, timeouts, done),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    def _kept(self, key: Host) -> _Connection | None:
        """An idle connection to the host still open and not expired, if any."""
        idle = self._idle.get(key)
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        while idle:
            connection = idle.pop()
            if (
                connection.loop is loop
                and now - connection.idle_since < self._expiry
                and connection.usable(poll=True)
            ):
                return connection
            connection.close()
        return None

    async def _connect(
        self, key: Host, request: httpx.Request, timeouts: dict[str, Any]
    ) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            message = f"could not connect to {host}:{port} in time"
            raise httpx.ConnectTimeout(message, request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return connection

    def _done(self, key: Host, connection: _Connection, reusable: bool) -> Callable[[bool], None]:
        """What happens once a response is closed: its connection kept (if the whole body
        was read and both sides keep it alive) or closed; its slot freed, once."""
        freed = False

        def done(whole: bool) -> None:
            nonlocal freed
            if freed:
                return
            freed = True
            self._slots.release()
            if whole and reusable and not self._closed and connection.usable():
                connection.idle_since = time.monotonic()
                self._idle.setdefault(key, []).append(connection)
            else:
                connection.close()

        return done

    async def aclose(self) -> None:
        """Close every idle connection (responses still open close theirs)."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _request_head(request: httpx.Request) -> bytes:
    """The request line and headers (the body, if any, follows with its Content-Length)."""
    if "transfer-encoding" in request.headers:
        raise httpx.UnsupportedProtocol("a streamed request body is not sent by this transport")
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One connection: bytes received wait in a buffer until the reader takes them."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._ended = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        """Set while the transport's write buffer is full (`pause_writing`)."""
        self.idle_since = 0.0
        self.loop = asyncio.get_running_loop()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_PAUSE_BYTES and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- for the transport ---

    def usable(self, *, poll: bool = False) -> bool:
        """Open, and nothing unasked for received (an idle connection the server closed or
        wrote to is not used again); `poll`: its socket polled too, for what the event loop
        has not read yet."""
        transport = self._transport
        if self._ended or self._buffer or transport is None or transport.is_closing():
            return False
        return not (poll and _socket_readable(transport.get_extra_info("socket")))

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):  # a connection of an event loop since closed
                self._transport.close()

    async def _more(self, request: httpx.Request, timeout: float | None) -> bool:
        """Wait for more bytes (False: the connection ended)."""
        if self._ended:
            return False
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        if self._error is not None and not self._buffer:
            raise httpx.ReadError(str(self._error) or type(self._error).__name__, request=request)
        return bool(self._buffer) or not self._ended

    async def exchange(
        self, sent: bytes, request: httpx.Request, timeouts: dict[str, Any], *, kept: bool
    ) -> _Head | None:
        """Send the request head `sent`; read the response's head (None: this `kept`
        connection was closed by the server before any byte of an answer came)."""
        assert self._transport is not None
        try:
            self._transport.write(sent)
        except (OSError, RuntimeError) as exc:
            self.close()
            raise httpx.WriteError(str(exc), request=request) from None
        if self._writable is not None:  # the request did not fit in the socket's buffers
            try:
                async with asyncio.timeout(timeouts.get("write")):
                    await self._writable
            except TimeoutError:
                self.close()
                raise httpx.WriteTimeout(
                    "the request was not sent in time", request=request
                ) from None
        while True:  # 1xx answers are skipped
            end = -1
            while (end := self._buffer.find(b"\r\n\r\n")) < 0:
                if len(self._buffer) > HEAD_MAX_BYTES:
                    self.close()
                    message = "the response head is too long"
                    raise httpx.RemoteProtocolError(message, request=request)
                if not await self._more(request, timeouts.get("read")):
                    self.close()
                    if kept and not self._buffer:
                        return None
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            status, reason, version, headers = _parse_head(raw, request)
            if not 100 <= status < 200:
                break
        framing, length = _framing(status, request, headers)
        connection_tokens = {
            token.strip().lower()
            for name, value in headers
            if name.lower() == b"connection"
            for token in value.split(b",")
        }
        reusable = (
            version == b"HTTP/1.1" and b"close" not in connection_tokens and framing != "close"
        )
        return _Head(status, reason, headers, framing, length, reusable)

    async def body(
        self, head: _Head, request: httpx.Request, timeouts: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunked bodies de-chunked)."""
        how, length = head.framing, head.length
        read_timeout = timeouts.get("read")
        if how == "length":
            left = length
            while left:
                if not self._buffer and not await self._more(request, read_timeout):
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body: "
                        f"received {length - left} bytes, expected {length}",
                        request=request,
                    )
                piece = bytes(self._buffer[:left])
                del self._buffer[: len(piece)]
                left -= len(piece)
                yield piece
        elif how == "close":
            while self._buffer or await self._more(request, read_timeout):
                piece = bytes(self._buffer)
                self._buffer.clear()
                if piece:
                    yield piece
        elif how == "chunked":
            async for piece in self._chunks(request, read_timeout):
                yield piece

    async def _line(self, request: httpx.Request, timeout: float | None) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > HEAD_MAX_BYTES or not await self._more(request, timeout):
                raise httpx.RemoteProtocolError("a malformed chunked body", request=request)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _chunks(self, request: httpx.Request, timeout: float | None) -> AsyncIterator[bytes]:
        while True:
            size_text = (await self._line(request, timeout)).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                size = -1
            if size < 0:
                raise httpx.RemoteProtocolError("a malformed chunk size", request=request)
            if size == 0:
                while await self._line(request, timeout):  # trailers, up to the empty line
                    pass
                return
            left = size
            while left:
                if not self._buffer and not await self._more(request, timeout):
                    raise httpx.RemoteProtocolError("a truncated chunked body", request=request)
                piece = bytes(self._buffer[:left])
                del self._buffer[: len(piece)]
                left -= len(piece)
                yield piece
            if await self._line(request, timeout):
                raise httpx.RemoteProtocolError("a malformed chunked body", request=request)


def _parse_head(
    raw: bytes, request: httpx.Request
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        message = f"not an HTTP/1.1 answer: {lines[0][:80]!r}"
        raise httpx.RemoteProtocolError(message, request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():  # also a folded (obsolete) line
            message = f"a malformed header line: {line[:80]!r}"
            raise httpx.RemoteProtocolError(message, request=request)
        headers.append((name, value.strip()))
    reason = parts[2] if len(parts) > 2 else b""
    return int(parts[1]), reason, parts[0], headers


def _framing(
    status: int, request: httpx.Request, headers: list[tuple[bytes, bytes]]
) -> tuple[str, int]:
    """How the body is delimited (`_Head.framing`) and its length, if given."""
    if request.method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        return "none", 0
    encodings = [v.lower() for n, v in headers if n.lower() == b"transfer-encoding"]
    if encodings:
        if not b"".join(encodings).replace(b" ", b"").endswith(b"chunked"):
            return "close", 0
        return "chunked", 0
    lengths = {v for n, v in headers if n.lower() == b"content-length"}
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise httpx.RemoteProtocolError("a malformed Content-Length", request=request)
    if lengths:
        return "length", int(next(iter(lengths)))
    return "close", 0


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection; closing it frees the connection."""

    def __init__(
        self,
        connection: _Connection,
        head: _Head,
        request: httpx.Request,
        timeouts: dict[str, Any],
        done: Callable[[bool], None],
    ) -> None:
        self._connection = connection
        self._head = head
        self._request = request
        self._timeouts = timeouts
        self._done = done
        self._whole = head.framing == "none"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._connection.body(self._head, self._request, self._timeouts):
                yield piece
            self._whole = True
        except BaseException:
            self._done(False)
            raise

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self._done(self._whole)
