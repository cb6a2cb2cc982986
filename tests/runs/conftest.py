"""The runs tests share the LLM tests' fixtures: an isolated data directory and a store."""

from tests.llm.conftest import isolated_environment, store

__all__ = ["isolated_environment", "store"]
