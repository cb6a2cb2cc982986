"""Where dataset files come from: an HTTP(S) root or a local folder, in the public layout."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Protocol

import httpx

from neuron_desk.core.errors import NotFound, SourceUnavailable

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class Source(Protocol):
    """Reads a file of the dataset by its path relative to the dataset root."""

    origin: str

    async def fetch(self, relative: str) -> bytes:
        """The file's bytes; NotFound if it does not exist, SourceUnavailable if unreachable."""
        ...


class HttpSource:
    """Files under an HTTP(S) root, with timeouts and retries on transient errors.

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
        max_bytes: int = 64 * 1024 * 1024,
        down_for_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_bytes = max_bytes
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
        problem = ""
        unreachable = False
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            try:
                response = await self._client.get(url)
            except httpx.TimeoutException:
                problem = "timed out"
                continue
            except httpx.TransportError as exc:
                problem = f"could not connect ({type(exc).__name__})"
                unreachable = isinstance(exc, httpx.ConnectError)
                continue
            unreachable = False
            if response.status_code == 404:
                raise NotFound(f"{relative} does not exist at {self.base_url}")
            if response.status_code in TRANSIENT_STATUS:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise SourceUnavailable(f"HTTP {response.status_code} ({url})")
            if len(response.content) > self._max_bytes:
                raise SourceUnavailable(f"{url} is larger than {self._max_bytes} bytes")
            return response.content
        message = f"{problem} after {self._retries + 1} tries"
        if unreachable:
            self._down = (time.monotonic() + self._down_for_s, f"{self.base_url} is unreachable")
        raise SourceUnavailable(f"{message} ({url})")


class FolderSource:
    """Files under a local folder in the public layout."""

    origin = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def fetch(self, relative: str) -> bytes:
        """Read the file (in a thread)."""
        path = self.root / relative
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None
        except OSError as exc:
            raise SourceUnavailable(f"could not read {path}: {exc.strerror}") from None
