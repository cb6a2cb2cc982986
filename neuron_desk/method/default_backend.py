"""The backend of explainers and simulators built without `backend=` (neuron-explainer's way).

It is the default endpoint profile's (`neuron_desk.llm.profiles.default_backend`), built on the
first request. This is the method layer's one import from a higher layer, declared with its
reason in pyproject.toml's import contracts.
"""

from __future__ import annotations

from neuron_desk.core.backend import DeferredBackend, LLMBackend


def _environment_backend() -> LLMBackend:
    from neuron_desk.llm.profiles import default_backend

    return default_backend()


def deferred_default_backend() -> DeferredBackend:
    """A backend that resolves the default profile's on its first request."""
    return DeferredBackend(_environment_backend)
