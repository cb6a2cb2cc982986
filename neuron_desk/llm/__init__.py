"""LLM endpoints: the OpenAI-compatible client, profiles, capability probe, cache and ledger.

- `client`: `OpenAICompatibleClient` (httpx; concurrency limit, retries, cancellation).
- `profiles`: endpoint profiles in `llm_profiles.json` (keys from env or the OS keyring).
- `capabilities`: the probe and the automatic simulator choice.
- `session`: `LLMSession`, a run's backend with the response cache, ledger and budget.
- `ledger`: token usage, prices and budgets; `estimate`: requests and tokens before a run.
- `local`: the bundled SmolLM2 model behind a managed llama.cpp server.
- `runs`: `NeuronRun`, explain and score one neuron with provenance (CLI and app).
"""

from neuron_desk.llm.client import OpenAICompatibleClient, RetryPolicy, default_backend
from neuron_desk.llm.ledger import Budget, Price, PriceTable, Usage
from neuron_desk.llm.profiles import Profile, ProfileConfig, open_backend
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
