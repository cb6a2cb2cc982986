"""Fixtures of the LLM tests: an isolated data directory, a store, fake servers, no real keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neuron_desk.data.store import Store

SECRET = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
"""A fake API key; tests check it never leaks."""


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory; no endpoint or key from the developer's environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("NEURON_DESK_HOME", str(home))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NEURON_DESK_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(params=["lean", "httpcore"])
def http_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The client's transport made by `TRANSPORTS[name]`: each test using this runs over
    both (the lean one the client uses, and httpx's own through httpcore)."""
    import neuron_desk.llm.client as client_module

    monkeypatch.setattr(client_module, "DEFAULT_TRANSPORT", request.param)
    return str(request.param)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store file."""
    s = Store.open(tmp_path / "store.sqlite3")
    yield s
    s.close()


async def no_sleep(seconds: float) -> None:
    """An injected sleep that records nothing and waits for nothing."""


class Sleeps:
    """An injected sleep that records the waits and advances a fake clock."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)
