"""Endpoint profiles: the config file, key sources and the default profile."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from neuron_desk.core.errors import BackendConfigError
from neuron_desk.llm.profiles import (
    LOCAL_PROFILE,
    OPENAI_PROFILE,
    Price,
    Profile,
    ProfileConfig,
    open_client,
    profiles_path,
    resolve_api_key,
)
from tests.llm.conftest import SECRET


def test_profiles_round_trip_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORK_KEY", SECRET)
    config = ProfileConfig.load()
    assert config.profiles == {} and config.path == profiles_path()
    config.put(
        Profile(
            name="work",
            base_url="http://gpu-box:8000/v1",
            api_key="env:WORK_KEY",
            explainer_model="big",
            simulator_model="base",
            max_concurrency=16,
            timeout=60,
            simulator_method="prompt-logprobs",
        )
    )
    config.default = "work"
    config.prices.set("gpt-4o-mini", Price(0.15, 0.6))
    path = config.save()
    assert SECRET not in path.read_text()
    loaded = ProfileConfig.load()
    work = loaded.get("work")
    assert work.max_concurrency == 16 and work.simulator_method == "prompt-logprobs"
    assert loaded.default_profile() == work
    assert loaded.prices.get("gpt-4o-mini-2024") == Price(0.15, 0.6)  # by prefix
    assert resolve_api_key(work) == SECRET
    client = open_client(work)
    assert client.max_concurrent == 16 and client.endpoint_id == "http://gpu-box:8000/v1"
    assert SECRET not in repr(client)


def test_a_key_in_the_file_is_refused_without_repeating_it(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    path.write_text(
        json.dumps({"profiles": [{"name": "x", "base_url": "http://h/v1", "api_key": SECRET}]})
    )
    with pytest.raises(BackendConfigError) as info:
        ProfileConfig.load(path)
    assert SECRET not in str(info.value)
    assert "never contain the key itself" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "base_url": "gpu-box:8000"}, "must start with http"),
        ({"name": "x", "base_url": "http://h", "max_concurrency": 0}, "max_concurrency"),
        ({"name": "x", "base_url": "http://h", "simulator_method": "magic"}, "simulator_method"),
        ({"name": "x", "base_url": "http://h", "colour": "red"}, "unknown profile settings"),
    ],
)
def test_bad_profiles(tmp_path: Path, entry: dict, message: str) -> None:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"profiles": [entry]}))
    with pytest.raises(BackendConfigError, match=message):
        ProfileConfig.load(path)


def test_default_profile_order(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ProfileConfig()
    assert config.default_profile() == LOCAL_PROFILE  # nothing configured: the bundled model
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert config.default_profile() == OPENAI_PROFILE
    monkeypatch.setenv("NEURON_DESK_BASE_URL", "http://127.0.0.1:8080/v1")
    env = config.default_profile()
    assert env.base_url == "http://127.0.0.1:8080/v1" and env.api_key == "env:OPENAI_API_KEY"
    with pytest.raises(BackendConfigError, match="no LLM profile named 'nope'"):
        config.resolve("nope")
    assert config.resolve(base_url="http://x:1/v1/").base_url == "http://x:1/v1"
    with pytest.raises(BackendConfigError, match="not both"):
        config.resolve("openai", "http://x:1/v1")


def test_key_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = Profile(name="p", base_url="http://h/v1", api_key="env:MISSING_KEY")
    with pytest.raises(BackendConfigError, match="MISSING_KEY, which is not set"):
        resolve_api_key(profile)
    assert resolve_api_key(Profile(name="p", base_url="http://h/v1")) is None

    keyring = types.ModuleType("keyring")
    keyring.get_password = lambda service, user: SECRET if user == "p" else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", keyring)
    assert resolve_api_key(Profile(name="p", base_url="http://h/v1", api_key="keyring")) == SECRET
    with pytest.raises(BackendConfigError, match="no key in the OS keyring"):
        resolve_api_key(Profile(name="q", base_url="http://h/v1", api_key="keyring"))
    monkeypatch.setitem(sys.modules, "keyring", None)  # not installed
    with pytest.raises(BackendConfigError, match="pip install keyring"):
        resolve_api_key(Profile(name="p", base_url="http://h/v1", api_key="keyring"))


def test_default_backend_is_built_without_starting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from neuron_desk.core.backend import DeferredBackend, LLMBackend
    from neuron_desk.llm.client import OpenAICompatibleClient
    from neuron_desk.llm.local import LocalBackend
    from neuron_desk.llm.profiles import default_backend
    from neuron_desk.method import TokenActivationPairExplainer

    local = default_backend()
    assert isinstance(local, LocalBackend) and isinstance(local, LLMBackend)
    assert local.server.pid is None  # started on the first request only
    monkeypatch.setenv("NEURON_DESK_BASE_URL", "http://127.0.0.1:9/v1")
    remote = default_backend()
    assert isinstance(remote, OpenAICompatibleClient) and remote.base_url == "http://127.0.0.1:9/v1"
    asyncio.run(remote.aclose())
    # An explainer built without backend= builds nothing until its first request.
    explainer = TokenActivationPairExplainer("m")
    assert isinstance(explainer.backend, DeferredBackend)
    assert explainer.backend.resolved is None
