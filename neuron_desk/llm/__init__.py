"""LLM endpoints: the OpenAI-compatible client and the default backend from settings."""

from neuron_desk.llm.client import OpenAICompatibleClient, default_backend

__all__ = ["OpenAICompatibleClient", "default_backend"]
