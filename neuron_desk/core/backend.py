"""The interface between the method and an LLM endpoint (implemented in `neuron_desk.llm`).

The method builds OpenAI-style request bodies and reads OpenAI-style responses; a backend
sends them. Keeping the interface here lets explainers and simulators be built and tested
without any network client, and lets the full client (retries, cache, ledger) replace the
minimal one without touching the method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

JSONDict = dict[str, Any]


@runtime_checkable
class LLMBackend(Protocol):
    """Sends OpenAI-compatible request bodies; each body names its "model"."""

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /v1/completions and return the decoded response."""
        ...

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /v1/chat/completions and return the decoded response."""
        ...


class DeferredBackend:
    """An LLMBackend that builds the real one on its first request, never before.

    Explainers and simulators built without `backend=` hold one of these, so building them,
    or reading their `backend`, needs no network, no key and no local model.
    """

    def __init__(self, resolve: Callable[[], LLMBackend]) -> None:
        self._resolve = resolve
        self._backend: LLMBackend | None = None

    @property
    def resolved(self) -> LLMBackend | None:
        """The real backend, once a request has been sent (None before)."""
        return self._backend

    def _real(self) -> LLMBackend:
        if self._backend is None:
            self._backend = self._resolve()
        return self._backend

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /v1/completions through the real backend."""
        return await self._real().completions(body)

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /v1/chat/completions through the real backend."""
        return await self._real().chat_completions(body)
