"""Endpoint profiles: where to send requests, with which models, key, concurrency and timeout.

Profiles live in `llm_profiles.json` in the data directory, next to the store:

    {
      "default": "work-vllm",
      "profiles": [
        {"name": "work-vllm", "base_url": "http://gpu-box:8000/v1", "api_key": "none",
         "explainer_model": "meta-llama/Llama-3.1-8B-Instruct",
         "simulator_model": "meta-llama/Llama-3.1-8B", "max_concurrency": 16, "timeout": 120}
      ],
      "prices": {"gpt-4o-mini": {"prompt": 0.15, "completion": 0.60, "cached_prompt": 0.075,
                                 "batch_prompt": 0.075, "batch_completion": 0.30}}
    }

The file never holds a key: `api_key` says where the key is, `"env:VARIABLE"` (an environment
variable), `"keyring"` (the OS keyring, service "neuron-desk", user = the profile's name) or
`"none"`. A value that looks like anything else is refused without being repeated back.
Prices are US dollars per million tokens: `prompt` and `completion` online; optional
`cached_prompt` (prompt tokens served from the provider's prefix cache; default: the prompt
rate) and `batch_prompt` / `batch_completion` (staged batches; default: half the online rates).

Two profiles are built in: "openai" (key from OPENAI_API_KEY) and "local" (the bundled
SmolLM2 model behind a managed llama.cpp server, with `neuron-desk[local]` installed).
The default profile is, in order: NEURON_DESK_BASE_URL / OPENAI_BASE_URL from the environment,
the file's "default", "openai" when OPENAI_API_KEY is set, else "local".
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuron_desk.core.errors import BackendConfigError
from neuron_desk.core.paths import Paths
from neuron_desk.llm.client import OPENAI_BASE_URL, OpenAICompatibleClient, RetryPolicy
from neuron_desk.llm.ledger import Price, PriceTable
from neuron_desk.llm.session import EndpointBackend

PROFILES_FILE = "llm_profiles.json"
KEYRING_SERVICE = "neuron-desk"
LOCAL_BASE_URL = "local"
"""The base URL of the managed local server's profile (its real address changes per start)."""
LOCAL_MODEL = "smollm2-135m-instruct"
METHODS = (
    "auto",
    "prompt-logprobs",
    "chat",
    "one-at-a-time",
    "written-digits",
    "logprob-free",
)

_KEY_SOURCE = re.compile(r"^(none|keyring|env:[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Profile:
    """One endpoint: its address, key source, models and limits."""

    name: str
    base_url: str
    api_key: str = "none"
    """Where the key is: "env:VARIABLE", "keyring" or "none" (never the key itself)."""
    explainer_model: str = ""
    simulator_model: str = ""
    max_concurrency: int = 8
    timeout: float = 120.0
    simulator_method: str = "auto"
    """auto, prompt-logprobs, chat or one-at-a-time (what `score` uses without --method)."""
    budget_tokens: int | None = None
    """Default cap on the tokens of one run through this profile (None: no cap)."""
    budget_usd: float | None = None
    """Default cap on the cost of one run (needs a price for the model)."""
    retry_budget_s: float = 1800.0
    """Seconds of retry waiting a run's requests may spend together before failures are final
    (30 min: an overnight batch rides out an hour-long run of 429s and 500s at 8 in flight)."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise BackendConfigError("a profile needs a name")
        if not _KEY_SOURCE.match(self.api_key):
            # Never echo the value: it may be a key pasted in the wrong place.
            raise BackendConfigError(
                f"profile {self.name!r}: api_key must say where the key is "
                '("env:VARIABLE", "keyring" or "none"), never contain the key itself'
            )
        if not self.is_local and not self.base_url.startswith(("http://", "https://")):
            raise BackendConfigError(
                f"profile {self.name!r}: base_url must start with http:// or https://"
            )
        if self.max_concurrency < 1:
            raise BackendConfigError(f"profile {self.name!r}: max_concurrency must be >= 1")
        if self.timeout <= 0:
            raise BackendConfigError(f"profile {self.name!r}: timeout must be positive")
        if (self.budget_tokens is not None and self.budget_tokens < 1) or (
            self.budget_usd is not None and self.budget_usd <= 0
        ):
            raise BackendConfigError(f"profile {self.name!r}: a budget must be positive")
        if self.retry_budget_s <= 0:
            raise BackendConfigError(f"profile {self.name!r}: retry_budget_s must be positive")
        if self.simulator_method not in METHODS:
            raise BackendConfigError(
                f"profile {self.name!r}: simulator_method must be one of {', '.join(METHODS)}"
            )

    @property
    def is_local(self) -> bool:
        """Whether this is the managed local llama.cpp server."""
        return self.base_url == LOCAL_BASE_URL

    @property
    def endpoint_id(self) -> str:
        """The endpoint's name in the cache, the ledger and provenance (never the key)."""
        return f"local:{LOCAL_MODEL}" if self.is_local else self.base_url.rstrip("/")

    def to_json(self) -> dict[str, Any]:
        """The profile as stored in the file."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        """A profile from the file (unknown keys are refused by name)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BackendConfigError(f"unknown profile settings: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise BackendConfigError(f"bad profile: {exc}") from None


OPENAI_PROFILE = Profile(
    name="openai",
    base_url=OPENAI_BASE_URL,
    api_key="env:OPENAI_API_KEY",
    explainer_model="gpt-4o-mini",
    simulator_model="gpt-4o-mini",
    max_concurrency=8,
    timeout=120.0,
)
LOCAL_PROFILE = Profile(
    name="local",
    base_url=LOCAL_BASE_URL,
    explainer_model=LOCAL_MODEL,
    simulator_model=LOCAL_MODEL,
    max_concurrency=1,
    timeout=900.0,
)
BUILT_IN = (OPENAI_PROFILE, LOCAL_PROFILE)


def profiles_path() -> Path:
    """The profiles file of this environment's data directory."""
    return Paths.from_env().profiles


@dataclass
class ProfileConfig:
    """The profiles file: user profiles (over the built-in ones), the default and prices."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    default: str | None = None
    prices: PriceTable = field(default_factory=PriceTable)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> ProfileConfig:
        """Read the file (a missing file is an empty configuration)."""
        path = path or profiles_path()
        config = cls(path=path)
        if not path.is_file():
            return config
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackendConfigError(f"cannot read {path}: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise BackendConfigError(f"{path} does not hold a JSON object")
        for entry in data.get("profiles") or []:
            if not isinstance(entry, dict):
                raise BackendConfigError(f"{path}: every profile must be an object")
            profile = Profile.from_json(entry)
            config.profiles[profile.name] = profile
        default = data.get("default")
        config.default = str(default) if default else None
        prices = data.get("prices") or {}
        if not isinstance(prices, dict):
            raise BackendConfigError(f"{path}: prices must be an object")
        for model, price in prices.items():
            if not isinstance(price, dict):
                raise BackendConfigError(f"{path}: price of {model} must be an object")
            config.prices.set(str(model), Price.from_json(price))
        return config

    def save(self) -> Path:
        """Write the file atomically; keys are never part of it."""
        path = self.path or profiles_path()
        data = {
            "default": self.default,
            "profiles": [p.to_json() for p in self.profiles.values()],
            "prices": {
                model: p.to_json() for model, p in self.prices.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        partial.replace(path)
        return path

    def all(self) -> list[Profile]:
        """Every profile: built-in ones (unless overridden), then the user's."""
        merged = {p.name: p for p in BUILT_IN}
        merged.update(self.profiles)
        return list(merged.values())

    def get(self, name: str) -> Profile:
        """The profile called `name`."""
        for profile in self.all():
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.all())
        raise BackendConfigError(f"no LLM profile named {name!r} (known: {known})")

    def put(self, profile: Profile) -> None:
        """Add or replace a user profile (call `save` to keep it)."""
        self.profiles[profile.name] = profile

    def default_profile(self) -> Profile:
        """The profile used when none is named (see the module docstring for the order)."""
        env_url = os.environ.get("NEURON_DESK_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        if env_url:
            return adhoc_profile(env_url, name="environment")
        if self.default:
            return self.get(self.default)
        if os.environ.get("OPENAI_API_KEY"):
            return self.get(OPENAI_PROFILE.name)
        return self.get(LOCAL_PROFILE.name)

    def resolve(self, name: str | None = None, base_url: str | None = None) -> Profile:
        """The profile a command asked for: by name, by base URL, or the default."""
        if name and base_url:
            raise BackendConfigError("give a profile or a base URL, not both")
        if base_url:
            return adhoc_profile(base_url)
        return self.get(name) if name else self.default_profile()


def adhoc_profile(base_url: str, name: str = "command-line") -> Profile:
    """A profile for a base URL given on the command line or in the environment.

    Its key comes from OPENAI_API_KEY when that is set; else no key is sent.
    """
    if base_url.rstrip("/") == OPENAI_BASE_URL:
        return OPENAI_PROFILE
    api_key = "env:OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else "none"
    return Profile(name=name, base_url=base_url.rstrip("/"), api_key=api_key)


def resolve_api_key(profile: Profile) -> str | None:
    """The API key of a profile, from the environment or the OS keyring (None for "none")."""
    source = profile.api_key
    if source == "none":
        return None
    if source.startswith("env:"):
        variable = source[4:]
        value = os.environ.get(variable)
        if not value:
            raise BackendConfigError(
                f"profile {profile.name!r} takes its API key from the environment variable "
                f"{variable}, which is not set"
            )
        return value
    try:
        import keyring
    except ImportError:
        raise BackendConfigError(
            f"profile {profile.name!r} keeps its key in the OS keyring: "
            "`pip install keyring` (or use an environment variable)"
        ) from None
    try:
        value = keyring.get_password(KEYRING_SERVICE, profile.name)
    except Exception as exc:  # keyring backends raise their own errors
        raise BackendConfigError(
            f"the OS keyring could not be read for profile {profile.name!r}: {type(exc).__name__}"
        ) from None
    if not value:
        raise BackendConfigError(
            f"no key in the OS keyring for profile {profile.name!r} (service {KEYRING_SERVICE!r})"
        )
    return str(value)


def store_key_in_keyring(profile_name: str, key: str) -> None:
    """Put a profile's key into the OS keyring (the profile's api_key should be "keyring")."""
    try:
        import keyring
    except ImportError:
        raise BackendConfigError("`pip install keyring` to keep keys in the OS keyring") from None
    keyring.set_password(KEYRING_SERVICE, profile_name, key)


def open_client(
    profile: Profile, *, retry: RetryPolicy | None = None, **kwargs: Any
) -> OpenAICompatibleClient:
    """A client for a remote profile (the key resolved now, held only by the client)."""
    if profile.is_local:
        raise BackendConfigError("the local profile is opened with open_backend()")
    return OpenAICompatibleClient(
        profile.base_url,
        resolve_api_key(profile),
        timeout=profile.timeout,
        max_concurrent=profile.max_concurrency,
        retry=retry or RetryPolicy(run_budget=profile.retry_budget_s),
        endpoint_id=profile.endpoint_id,
        **kwargs,
    )


def open_backend(profile: Profile) -> EndpointBackend:
    """The backend of a profile: an HTTP client, or the managed local server's backend.

    Either way it is an `EndpointBackend`: close it with `await backend.aclose()`.
    """
    if profile.is_local:
        from neuron_desk.llm.local import LocalBackend

        return LocalBackend(timeout=profile.timeout)
    return open_client(profile)


def default_backend(config: ProfileConfig | None = None) -> EndpointBackend:
    """The backend of the default profile (what the method uses when given no backend)."""
    config = config or ProfileConfig.load()
    return open_backend(config.default_profile())
