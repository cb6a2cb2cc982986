"""The interface between the method and an LLM endpoint (implemented in `neuron_desk.llm`).

The method builds OpenAI-style request bodies and reads OpenAI-style responses; a backend
sends them. Keeping the interface here lets explainers and simulators be built and tested
without any network client, and lets the full client (retries, cache, ledger) replace the
minimal one without touching the method.
"""

from __future__ import annotations

import importlib
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


def resolve_default_backend() -> LLMBackend:
    """The backend configured by settings/environment; built on first use, never at import."""
    llm = importlib.import_module("neuron_desk.llm")
    backend: LLMBackend = llm.default_backend()
    return backend
