"""The managed local server, with a fake child process in place of llama.cpp's server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from neuron_desk.core.errors import BackendUnavailable
from neuron_desk.llm.local import (
    LOCAL_ENDPOINT_ID,
    LocalBackend,
    LocalServer,
    free_port,
    local_available,
)
from tests.llm.conftest import until

CHILD = str(Path(__file__).with_name("fake_llama_server.py"))
CHAT = {"model": "anything", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def server(tmp_path: Path, *flags: str, **kwargs) -> LocalServer:  # type: ignore[no-untyped-def]
    return LocalServer(
        [sys.executable, CHILD, "--port", "{port}", *flags],
        log_path=tmp_path / "server.log",
        **kwargs,
    )


def test_starts_answers_restarts_and_stops(tmp_path: Path) -> None:
    backend = LocalBackend(server(tmp_path, startup_timeout=20))

    async def go() -> None:
        response = await backend.chat_completions(CHAT)
        assert response["choices"][0]["message"]["content"] == " local words"
        assert backend.endpoint_id == LOCAL_ENDPOINT_ID
        first = backend.server.pid
        assert first is not None and backend.server.alive
        assert backend.server.base_url.startswith("http://127.0.0.1:")
        os.kill(first, signal.SIGKILL)  # it dies
        await until(lambda: not backend.server.alive)
        response = await backend.chat_completions(CHAT)  # restarted on the next request
        assert response["choices"]
        assert backend.server.pid != first and backend.server.restarts == 1
        await backend.aclose()
        assert not backend.server.alive and backend.server.pid is None

    asyncio.run(go())
    assert "listening on" in (tmp_path / "server.log").read_text()


def test_a_child_that_fails_at_start_is_reported(tmp_path: Path) -> None:
    backend = LocalBackend(server(tmp_path, "--fail"))
    with pytest.raises(BackendUnavailable, match=r"exited at start .*model file is corrupt"):
        asyncio.run(backend.chat_completions(CHAT))
    assert not backend.server.alive


def test_a_child_that_never_answers_times_out(tmp_path: Path) -> None:
    local = server(tmp_path, "--silent", startup_timeout=0.5)
    with pytest.raises(BackendUnavailable, match=r"did not answer within 0\.5 s"):
        asyncio.run(local.ensure_running())
    assert not local.alive  # stopped, not left behind


def test_gives_up_after_too_many_restarts(tmp_path: Path) -> None:
    local = server(tmp_path, max_restarts=1, startup_timeout=20)

    async def go() -> None:
        for _ in range(2):
            await local.ensure_running()
            pid = local.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await until(lambda: not local.alive)
        await local.ensure_running()

    with pytest.raises(BackendUnavailable, match="died 2 times"):
        asyncio.run(go())
    local.stop()


def test_free_port_and_availability() -> None:
    assert 0 < free_port() < 65536
    ok, message = local_available()
    assert ok or ("neuron-desk[local]" in message and "OPENAI_API_KEY" in message)
