"""Where dataset files come from: an HTTP(S) root or a local folder, in the public layout."""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from neuron_desk.core.errors import NotFound, SourceUnavailable

if TYPE_CHECKING:  # httpx loads with the first HTTP client (opening a stored neuron needs none)
    import httpx

MAX_FILE_BYTES = 16 * 1024 * 1024
"""The largest body read from a source, after decompression (the validation's cap is the same).

A real GPT-2 XL record is about 236 KB; five kinds fetched at once stay under 100 MB of bodies.
"""

HTTP_CONNECTIONS = 40
"""Connections to a dataset's host at most (a neuron's related neurons are fetched at once)."""

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class Source(Protocol):
    """Reads a file of the dataset by its path relative to the dataset root."""

    origin: str

    async def fetch(self, relative: str) -> bytes:
        """The file's bytes; NotFound if it does not exist, SourceUnavailable if unreachable."""
        ...


class HttpSource:
    """Files under an HTTP(S) root, with timeouts, retries on transient errors and bounds.

    A body is streamed and its size checked while it is read, after decompression, so neither
    a huge body nor a gzip bomb is ever held whole; each file (all its tries) gets at most
    `file_time_s` seconds, so a mirror that trickles bytes cannot hold a fetch for longer.
    Every error names the URL.

    Once a file could not be fetched because the host cannot be reached at all, the source is
    taken as down for `down_for_s`: further fetches fail at once instead of each retrying.
    """

    origin = "network"

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_bytes: int = MAX_FILE_BYTES,
        file_time_s: float = 120.0,
        down_for_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_bytes = max_bytes
        self._file_time_s = file_time_s
        self._down_for_s = down_for_s
        self._down: tuple[float, str] | None = None
        """(until when, why) the host is taken as unreachable."""

    async def fetch(self, relative: str) -> bytes:
        """GET the file; retry timeouts, dropped connections and 429/5xx a few times."""
        url = f"{self.base_url}/{relative}"
        if self._down is not None:
            until, why = self._down
            if time.monotonic() < until:
                raise SourceUnavailable(f"{why}; not tried again yet ({url})")
            self._down = None
        try:
            async with asyncio.timeout(self._file_time_s):
                return await self._fetch(url, relative)
        except TimeoutError:
            raise SourceUnavailable(
                f"not received within {self._file_time_s:g} s ({url})"
            ) from None

    async def _fetch(self, url: str, relative: str) -> bytes:
        import httpx

        problem = ""
        unreachable = False
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            try:
                status, body = await self._get(url)
            except httpx.TimeoutException:
                problem = "timed out"
                continue
            except httpx.TooManyRedirects:
                raise SourceUnavailable(f"too many redirects ({url})") from None
            except httpx.DecodingError as exc:
                raise SourceUnavailable(f"a body that cannot be decoded: {exc} ({url})") from None
            except httpx.TransportError as exc:
                problem = f"could not connect ({type(exc).__name__})"
                unreachable = isinstance(exc, httpx.ConnectError)
                continue
            except httpx.HTTPError as exc:
                raise SourceUnavailable(f"{type(exc).__name__}: {exc} ({url})") from None
            unreachable = False
            if status == 404:
                raise NotFound(f"{relative} does not exist at {self.base_url}")
            if status in TRANSIENT_STATUS:
                problem = f"HTTP {status}"
                continue
            if status >= 400:
                raise SourceUnavailable(f"HTTP {status} ({url})")
            assert body is not None
            return body
        message = f"{problem} after {self._retries + 1} tries"
        if unreachable:
            self._down = (time.monotonic() + self._down_for_s, f"{self.base_url} is unreachable")
        raise SourceUnavailable(f"{message} ({url})")

    async def _get(self, url: str) -> tuple[int, bytes | None]:
        """(status, body): the body is read, decompressed, only for a 2xx, within the cap."""
        async with self._client.stream("GET", url) as response:
            if not 200 <= response.status_code < 300:
                return response.status_code, None
            encoding = response.headers.get("content-encoding", "").strip().lower()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes and not encoding:
                raise SourceUnavailable(f"{url} is larger than {self._max_bytes:,} bytes")
            capped = _Capped(url, self._max_bytes, encoding)
            if encoding in ("", "identity", *_ZLIB_ENCODINGS):
                async for chunk in response.aiter_raw():
                    capped.add(chunk)
            else:  # another encoding (br, zstd): httpx decodes, the cap is checked per chunk
                async for chunk in response.aiter_bytes():
                    capped.add_decoded(chunk)
            return response.status_code, capped.body()


_ZLIB_ENCODINGS = ("gzip", "x-gzip", "deflate")


class _Capped:
    """A body collected up to a byte cap, inflated here (never past the cap) when gzip/deflate."""

    def __init__(self, url: str, max_bytes: int, encoding: str) -> None:
        self._url = url
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._inflate = (
            zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in _ZLIB_ENCODINGS else None
        )

    def add(self, raw: bytes) -> None:
        """Take a raw chunk as it came off the wire."""
        if self._inflate is None:
            self.add_decoded(raw)
            return
        data = raw
        while data:
            try:
                out = self._inflate.decompress(data, self._max - self._size + 1)
            except zlib.error as exc:
                raise SourceUnavailable(
                    f"a body that cannot be decoded: {exc} ({self._url})"
                ) from None
            self.add_decoded(out)
            data = self._inflate.unconsumed_tail
            if self._inflate.eof:
                break

    def add_decoded(self, chunk: bytes) -> None:
        """Take a decoded chunk; refuse the body once it passes the cap."""
        self._size += len(chunk)
        if self._size > self._max:
            raise SourceUnavailable(
                f"{self._url} is larger than {self._max:,} bytes (decompressed)"
            )
        self._chunks.append(chunk)

    def body(self) -> bytes:
        """The whole (decoded) body."""
        if self._inflate is not None and not self._inflate.eof and self._size == 0:
            raise SourceUnavailable(f"a body that cannot be decoded: truncated ({self._url})")
        return b"".join(self._chunks)


class FolderSource:
    """Files under a local folder in the public layout."""

    origin = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def fetch(self, relative: str) -> bytes:
        """Read the file (in a thread); a file over the size cap is refused unread."""
        path = self.root / relative
        try:
            return await asyncio.to_thread(read_capped, path)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None
        except OSError as exc:
            raise SourceUnavailable(f"could not read {path}: {exc.strerror}") from None


def read_capped(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    with path.open("rb") as handle:
        body = handle.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise SourceUnavailable(f"{path} is larger than {max_bytes:,} bytes")
    return body
