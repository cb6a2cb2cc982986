"""The API key never shows: it is blanked from a server's words before they are cut, and from
the model's own output before it reaches the cache, the store, exports or the terminal."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from neuron_desk.cli import main
from neuron_desk.core.errors import BackendHTTPError
from neuron_desk.llm.client import OpenAICompatibleClient, RetryPolicy
from tests.fake_openai import FakeOpenAI, FakeServer
from tests.reliability.test_border import folder_dataset
from tests.reliability.test_ranges import folder_with_records, register
from tests.synthetic import oracle

SECRET = "sk-live-0123456789abcdefghijkl"  # 29 characters, as in the finding


def pieces(secret: str, size: int = 6) -> list[str]:
    """Every run of `size` characters of the secret: none of them may show."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


class _Echoing(BaseHTTPRequestHandler):
    """Answers 400 with an error text in which the key crosses character 500."""

    body_kind = "json"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        words = "x" * 490 + " " + self.headers["Authorization"].removeprefix("Bearer ")
        body = (
            json.dumps({"error": {"message": words}}).encode()
            if self.body_kind == "json"
            else words.encode()
        )
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(params=["json", "text"])
def echoing(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Echoing,), {"body_kind": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_key_crossing_the_cut_of_a_server_message_never_shows(echoing: str) -> None:
    async def go() -> None:
        async with OpenAICompatibleClient(
            echoing, SECRET, retry=RetryPolicy(max_attempts=1)
        ) as client:
            await client.chat_completions({"model": "m", "messages": []})

    with pytest.raises(BackendHTTPError) as caught:
        asyncio.run(go())
    message = str(caught.value)
    assert "***" in message
    assert not [p for p in pieces(SECRET) if p in message]


def test_a_key_the_model_repeats_is_kept_out_of_store_cache_and_output(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("NEURON_DESK_HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    root = tmp_path / "folder"
    folder_with_records(root)
    register(home, folder_dataset(root))
    fake = FakeOpenAI(neuron=oracle, explanation=f" tokens near the key {SECRET}")
    with FakeServer(fake) as server:
        code = main(
            [
                "explain",
                "folder",
                "0",
                "1",
                "--base-url",
                server.base_url,
                "--model",
                "fake-model",
                "--method",
                "chat",
                "--json",
            ]
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "***" in out
    for text in (out, err):
        assert not [p for p in pieces(SECRET) if p in text]
    for file in home.rglob("*"):
        if file.is_file():
            raw = file.read_bytes()
            assert SECRET.encode() not in raw, file
            assert SECRET[:12].encode() not in raw, file
