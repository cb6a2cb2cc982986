"""LLM endpoints: the OpenAI-compatible client, profiles, capability probe, cache and ledger.

- `client`: `OpenAICompatibleClient` (httpx; concurrency limit, retries, cancellation).
- `profiles`: endpoint profiles in `llm_profiles.json` (keys from env or the OS keyring),
  `open_backend` and the default backend.
- `capabilities`: the probe and the automatic simulator choice (table `capabilities`).
- `session`: `LLMSession`, a run's backend with the response cache, ledger and budget.
- `cache`: the response cache (table `llm_cache`).
- `ledger`: token usage, prices and budgets (table `usage`).
- `local`: the bundled SmolLM2 model behind a managed llama.cpp server.

Runs (explain, score, estimates, batches) are one layer up, in `neuron_desk.runs`.
"""

from neuron_desk.llm.client import OpenAICompatibleClient, RetryPolicy
from neuron_desk.llm.ledger import Budget, Price, PriceTable, Usage
from neuron_desk.llm.profiles import Profile, ProfileConfig, default_backend, open_backend
from neuron_desk.llm.session import LLMSession

__all__ = [
    "Budget",
    "LLMSession",
    "OpenAICompatibleClient",
    "Price",
    "PriceTable",
    "Profile",
    "ProfileConfig",
    "RetryPolicy",
    "Usage",
    "default_backend",
    "open_backend",
]
