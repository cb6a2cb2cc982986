"""A small async client for OpenAI-compatible endpoints (OpenAI, vLLM, llama.cpp, Ollama).

It implements `core.backend.LLMBackend`. The API key goes only into the Authorization header
of requests to the configured base URL; it is never part of a message, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Any

import httpx

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import (
    BackendConfigError,
    BackendHTTPError,
    BackendResponseError,
    BackendUnavailable,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatibleClient:
    """Sends request bodies to `{base_url}/completions` and `{base_url}/chat/completions`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_concurrent: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise BackendConfigError(f"base URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self._semaphore = asyncio.Semaphore(max_concurrent)

    def __repr__(self) -> str:
        return f"OpenAICompatibleClient({self.base_url!r})"

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /completions."""
        return await self._post("/completions", body)

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /chat/completions."""
        return await self._post("/chat/completions", body)

    async def list_models(self) -> list[str]:
        """The model ids the endpoint lists under /models."""
        data = await self._request("GET", "/models", None)
        models = data.get("data")
        if not isinstance(models, list):
            raise BackendResponseError(f"{self.base_url}/models did not return a model list")
        return [str(m.get("id")) for m in models if isinstance(m, dict)]

    async def _post(self, path: str, body: JSONDict) -> JSONDict:
        async with self._semaphore:
            return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: JSONDict | None) -> JSONDict:
        url = f"{self.base_url}{path}"
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise BackendUnavailable(f"{url} timed out") from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"could not reach {url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise BackendHTTPError(response.status_code, _error_message(response), url)
        try:
            data = response.json()
        except ValueError:
            raise BackendResponseError(f"{url} answered with something that is not JSON") from None
        if not isinstance(data, dict):
            raise BackendResponseError(f"{url} answered with JSON that is not an object")
        return data

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> OpenAICompatibleClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        data: Any = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return response.text[:300]


def default_backend() -> OpenAICompatibleClient:
    """A client from the environment: NEURON_DESK_BASE_URL or OPENAI_BASE_URL, OPENAI_API_KEY."""
    base_url = os.environ.get("NEURON_DESK_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    base_url = base_url or OPENAI_BASE_URL
    api_key = os.environ.get("OPENAI_API_KEY")
    if base_url.rstrip("/") == OPENAI_BASE_URL and not api_key:
        raise BackendConfigError(
            "no LLM endpoint configured: set OPENAI_API_KEY for OpenAI, or NEURON_DESK_BASE_URL "
            "to an OpenAI-compatible server (vLLM, llama.cpp, Ollama)"
        )
    return OpenAICompatibleClient(base_url, api_key)
