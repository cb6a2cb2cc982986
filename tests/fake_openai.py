"""A fake OpenAI-compatible server on 127.0.0.1 for integration tests (real HTTP, real sockets).

It answers /v1/models, /v1/completions (with echo + logprobs, as vLLM and llama.cpp do) and
/v1/chat/completions (with logprobs + top_logprobs). What it predicts comes from a `neuron`
function that maps a token sequence to normalized activations 0..10 (an oracle), or from a
seeded random generator (noise). Explanation requests are answered with `explanation`.
Scripted failures (`fail_next`) return an HTTP status before answering normally.

It tokenizes like a digit-splitting tokenizer when `split_digits` is set: "10" is "1","0".

Switches for the client tests (all off by default, so the defaults behave as before):
`echo` ("ok", "reject": 400 like llama.cpp's C++ server, "ignore": no prompt logprobs),
`logprobs` (False: no logprobs anywhere, like many hosted chat endpoints), `completions`
(False: /completions answers 404), `retry_after` (seconds sent with scripted 429s), `latency`
(seconds before each answer), `hang` (never answer), `garbage_next` / `drop_next` (answer
non-JSON, or close the connection without answering, that many times), `redirect_to` (a URL
every POST is redirected to), `echo_auth_in_errors` (error messages repeat the Authorization
header, as careless proxies do), `chat_logprobs` (False: chat without logprobs), `ignore_n`
(one choice whatever `n` asks, as llama.cpp's server), `reject_text` (400 for any request
whose body contains it), `flaky_every` (every n-th request fails, 429 and 500 in turn). It counts requests in progress (`active`, `max_active`),
requests whose client went away (`aborted`), and the Authorization headers it saw.
"""

from __future__ import annotations

import json
import math
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Neuron = Callable[[Sequence[str]], list[int]]

_LAST_TOKEN = re.compile(r"Last token in the text:\n(.*?)\n\nLast token activation", re.S)


@dataclass
class FakeOpenAI:
    """Configuration and request log of the fake server."""

    neuron: Neuron | None = None
    """Oracle: true normalized activations of a token sequence; None answers with noise."""
    explanation: str = " vowels"
    split_digits: bool = False
    seed: int = 0
    fail_next: list[int] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    echo: str = "ok"
    logprobs: bool = True
    completions_route: bool = True
    retry_after: float | None = None
    latency: float = 0.0
    hang: bool = False
    garbage_next: int = 0
    drop_next: int = 0
    redirect_to: str | None = None
    echo_auth_in_errors: bool = False
    chat_logprobs: bool = True
    ignore_n: bool = False
    reject_text: str | None = None
    judge: Callable[[str, str], bool] | None = None
    """Detection/fuzzing answers: judge(system prompt, excerpt) is 1 or 0 (None: random)."""
    flaky_every: int = 0
    """Fail every n-th request (0: none), alternately 429 (with `retry_after`) and 500."""
    flaky_failed: int = 0
    active: int = 0
    max_active: int = 0
    aborted: int = 0
    authorization: list[str | None] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    """When each request of `requests` arrived (time.monotonic())."""
    models: list[str] | None = None
    """The models served (None: any); another answers 404 "model ... does not exist"."""
    usage: bool = False
    """Report `usage` in every answer, as vLLM does (False: only where a test asks for it, so
    the tiktoken count of answers without one is exercised)."""

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self.closing = threading.Event()

    # --- predictions ---

    def _values(self, tokens: Sequence[str]) -> list[int]:
        if self.neuron is not None:
            return list(self.neuron(tokens))
        with self._lock:
            return [self._random.randint(0, 10) for _ in tokens]

    def _digit_tokens(self, value: int) -> list[str]:
        text = str(value)
        return list(text) if self.split_digits else [text]

    def _top(self, value: int) -> dict[str, float]:
        """Top logprobs putting 0.8 on the value's first token, the rest spread."""
        first = self._digit_tokens(value)[0]
        others = [str(v) for v in range(10 if self.split_digits else 11) if str(v) != first]
        top = {first: math.log(0.8)}
        for token in others[:5]:
            top[token] = math.log(0.2 / 5)
        return top

    def _after_one(self, value: int) -> dict[str, float]:
        """What follows a written "1": "0" if the value is 10."""
        return (
            {"0": math.log(0.95), "\n": math.log(0.05)}
            if value == 10
            else {
                "\n": math.log(0.95),
                "0": math.log(0.05),
            }
        )

    # --- completions ---

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt", "")
        if body.get("echo") and self.echo == "ok" and self.logprobs:
            if "\n<start>\n" not in prompt:
                return self._plain_echo(prompt)
            return self._echo(prompt)
        if body.get("echo") and self.echo == "ignore":
            return {"choices": [{"text": prompt + "x", "index": 0, "logprobs": None}]}
        if body.get("logprobs") is not None and self.logprobs:
            if "Last token activation" in prompt:
                return self._one_token_completion(prompt)
            return {
                "choices": [
                    {
                        "text": "1",
                        "index": 0,
                        "logprobs": {"tokens": ["1"], "top_logprobs": [self._top(1)]},
                    }
                ]
            }
        n = 1 if self.ignore_n else body.get("n", 1)
        return {"choices": [{"text": self.explanation, "index": i} for i in range(n)]}

    def _plain_echo(self, prompt: str) -> dict[str, Any]:
        """Echo of a prompt that is not a simulation (the capability probe's)."""
        tokens = [prompt[i : i + 3] for i in range(0, len(prompt), 3)]
        top: list[dict[str, float] | None] = [None] + [{t: -0.5} for t in tokens[1:]]
        return {
            "choices": [
                {
                    "text": prompt + "!",
                    "index": 0,
                    "logprobs": {"tokens": [*tokens, "!"], "top_logprobs": [*top, {"!": -0.1}]},
                }
            ]
        }

    def _echo(self, prompt: str) -> dict[str, Any]:
        section_start = prompt.rfind("\n<start>\n") + len("\n<start>\n")
        section_end = prompt.rfind("\n<end>\n")
        # The section is "<token>\tunknown\n" per token; a token may hold newlines or tabs.
        entries = (prompt[section_start:section_end] + "\n").split("\tunknown\n")[:-1]
        values = self._values(entries)
        # Tokenize: everything before the section by characters in chunks of 4, then the
        # section as token, "\t", "unknown", "\n".
        tokens: list[str] = []
        top: list[dict[str, float] | None] = []
        head = prompt[:section_start]
        for i in range(0, len(head), 4):
            tokens.append(head[i : i + 4])
            top.append(None if i == 0 else {"x": -1.0})
        for token, value in zip(entries, values, strict=True):
            if token:
                tokens.append(token)
                top.append({"x": -1.0})
            tokens.append("\t")
            top.append({"\t": -0.1})
            tokens.append("unknown")
            top.append(self._top(value))
            tokens.append("\n")
            top.append({"\n": -0.1})
        rest = prompt[section_start + sum(len(t) + len("\tunknown\n") for t in entries) :]
        if rest:
            tokens.append(rest)
            top.append({"x": -1.0})
        offsets = []
        position = 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        assert "".join(tokens) == prompt
        return {
            "choices": [
                {
                    "text": prompt + "<",
                    "index": 0,
                    "logprobs": {
                        "tokens": [*tokens, "<"],
                        "token_logprobs": [None] + [-1.0] * len(tokens),
                        "top_logprobs": [*top, {"<": -0.1}],
                        "text_offset": [*offsets, len(prompt)],
                    },
                }
            ]
        }

    def _target_of_one_token_prompt(self, text: str) -> int:
        """The value for the last "Last token in the text" of a one-at-a-time prompt."""
        last_token = _LAST_TOKEN.findall(text)[-1]
        return self._values([last_token])[0]  # the fake neurons are token-local

    def _one_token_completion(self, prompt: str) -> dict[str, Any]:
        value = self._target_of_one_token_prompt(prompt)
        digits = self._digit_tokens(value)
        top = [self._top(value)]
        if digits[0] == "1":
            top.append(self._after_one(value))
        return {
            "choices": [
                {
                    "text": "".join(digits),
                    "index": 0,
                    "logprobs": {"tokens": digits, "top_logprobs": top},
                }
            ]
        }

    # --- chat ---

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages", [])
        last = messages[-1]["content"] if messages else ""
        response = self._chat(body, last)
        if not self.logprobs or not self.chat_logprobs or not body.get("logprobs"):
            for choice in response["choices"]:
                choice.pop("logprobs", None)
        elif isinstance(body.get("top_logprobs"), int):
            for choice in response["choices"]:
                for entry in (choice.get("logprobs") or {}).get("content") or []:
                    entry["top_logprobs"] = entry["top_logprobs"][: body["top_logprobs"]]
        return response

    def _chat(self, body: dict[str, Any], last: str) -> dict[str, Any]:
        if last.startswith("Explanation: ") and "\n\nExcerpts:\n\n" in last:
            return self._classify(body["messages"][0]["content"], last)
        if last.startswith('{"to_find": '):
            return self._logprob_free(last)
        if "<start>\n" in last and "\tunknown" in last:
            return self._chat_generation(last)
        if "Last token activation" in last:
            value = self._target_of_one_token_prompt(last)
            return self._chat_answer(self._digit_tokens(value), [value])
        if body.get("logprobs"):  # the capability probe: a digit with many alternatives
            top = [{"token": str(d), "logprob": math.log(0.1)} for d in range(10)]
            top += [{"token": f"w{i}", "logprob": -9.0} for i in range(20)]
            return {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "0"},
                        "logprobs": {
                            "content": [{"token": "0", "logprob": -2.3, "top_logprobs": top}]
                        },
                    }
                ]
            }
        n = 1 if self.ignore_n else body.get("n", 1)
        return {
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": self.explanation}}
                for i in range(n)
            ]
        }

    def _classify(self, system: str, question: str) -> dict[str, Any]:
        """A detection/fuzzing answer: "[1,0,...]", each digit with top logprobs."""
        excerpts = re.findall(r"^Excerpt \d+: (.*)$", question, re.M)
        with self._lock:
            values = [
                int(self.judge(system, e)) if self.judge else self._random.randint(0, 1)
                for e in excerpts
            ]
        pieces = ["["]
        for i, v in enumerate(values):
            pieces += [str(v), "," if i + 1 < len(values) else "]"]
        entries = []
        for piece in pieces:
            if piece in ("0", "1"):
                p = 0.9
                other = "0" if piece == "1" else "1"
                top = [
                    {"token": piece, "logprob": math.log(p)},
                    {"token": other, "logprob": math.log(1 - p)},
                ]
            else:
                top = [{"token": piece, "logprob": -0.01}]
            entries.append({"token": piece, "logprob": -0.1, "top_logprobs": top})
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "logprobs": {"content": entries},
                }
            ],
            "usage": {"prompt_tokens": 400, "completion_tokens": len(pieces)},
        }

    def _logprob_free(self, question: str) -> dict[str, Any]:
        """The logprob-free simulator's JSON answer: the tokens with activations filled in."""
        asked = json.loads(question)
        tokens = [a["token"] for a in asked["activations"]]
        asked["activations"] = [
            {"token": t, "activation": v} for t, v in zip(tokens, self._values(tokens), strict=True)
        ]
        content = json.dumps(asked)
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": len(tokens) * 8},
        }

    def _chat_generation(self, question: str) -> dict[str, Any]:
        body = question.split("<start>\n", 1)[1].rsplit("\n<end>", 1)[0]
        escaped = [line.rsplit("\t", 1)[0] for line in body.split("\n")]
        tokens = [_unescape(t) for t in escaped]
        values = self._values(tokens)
        pieces: list[str] = ["<start>", "\n"]
        value_of_piece: list[int | None] = [None, None]
        for token, value in zip(escaped, values, strict=True):
            pieces += [token, "\t"] if token else ["\t"]
            value_of_piece += [None, None] if token else [None]
            digits = self._digit_tokens(value)
            pieces += digits
            value_of_piece += [value] + [None] * (len(digits) - 1)
            pieces.append("\n")
            value_of_piece.append(None)
        pieces.append("<end>")
        value_of_piece.append(None)
        return self._chat_answer(pieces, value_of_piece)

    def _chat_answer(self, pieces: list[str], values: list[int | None]) -> dict[str, Any]:
        entries = []
        for i, piece in enumerate(pieces):
            value = values[i] if i < len(values) else None
            if value is not None:
                top = self._top(value)
            elif (
                i > 0 and pieces[i - 1] == "1" and i - 1 < len(values) and values[i - 1] is not None
            ):
                top = self._after_one(values[i - 1] or 0)
            else:
                top = {piece: -0.01}
            entries.append(
                {
                    "token": piece,
                    "logprob": -0.2,
                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()],
                }
            )
        content = "".join(pieces)
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": {"content": entries},
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": len(pieces)},
        }


def _unescape(token: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m[1], m[1]), token)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """Whether the client closed the connection (checked without consuming data)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _wait(self, seconds: float | None) -> bool:
        """Wait `seconds` (None: forever); False if the client went away meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if self.fake.closing.is_set() or self._client_gone():
                return False
            time.sleep(0.005)
        return True

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        fake = self.fake
        with fake._lock:
            fake.requests.append((self.path, body))
            fake.arrived.append(time.monotonic())
            fake.authorization.append(self.headers.get("Authorization"))
            fake.active += 1
            fake.max_active = max(fake.max_active, fake.active)
        try:
            self._answer(body)
        finally:
            with fake._lock:
                fake.active -= 1

    def _answer(self, body: dict[str, Any]) -> None:
        fake = self.fake
        if (fake.hang or fake.latency) and not self._wait(None if fake.hang else fake.latency):
            with fake._lock:
                fake.aborted += 1
            self.close_connection = True
            return
        if fake.models is not None and body.get("model") not in fake.models:
            message = f"The model `{body.get('model')}` does not exist"
            self._send(404, {"error": {"message": message, "code": "model_not_found"}})
            return
        if fake.reject_text is not None and fake.reject_text in json.dumps(body):
            self._send(400, {"error": {"message": f"rejected: {fake.reject_text}"}})
            return
        with fake._lock:
            status = fake.fail_next.pop(0) if fake.fail_next else None
            if status is None and fake.flaky_every and len(fake.requests) % fake.flaky_every == 0:
                status = (429, 500)[fake.flaky_failed % 2]
                fake.flaky_failed += 1
            drop = fake.drop_next > 0
            fake.drop_next -= int(drop)
            garbage = not drop and fake.garbage_next > 0
            fake.garbage_next -= int(garbage)
        if status is not None:
            message = f"scripted failure {status}"
            if fake.echo_auth_in_errors:
                message += f" (you sent Authorization: {self.headers.get('Authorization')})"
            headers = {}
            if status == 429 and fake.retry_after is not None:
                headers["Retry-After"] = f"{fake.retry_after:g}"
            self._send(status, {"error": {"message": message}}, headers)
            return
        if drop:
            self.close_connection = True
            return
        if garbage:
            data = b"<html>502 Bad Gateway (not JSON)</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if fake.redirect_to is not None:
            self.send_response(307)
            self.send_header("Location", fake.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.endswith("/chat/completions"):
            self._send(200, _with_usage(fake, body, fake.chat(body)))
        elif self.path.endswith("/completions") and fake.completions_route:
            if body.get("echo") and fake.echo == "reject":
                self._send(400, {"error": {"message": "'echo' is not supported"}})
            else:
                self._send(200, _with_usage(fake, body, fake.completions(body)))
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})


def _with_usage(fake: FakeOpenAI, body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` with vLLM's `usage` when the fake reports usage (tokens of ~4 characters)."""
    if not fake.usage or "usage" in answer:
        return answer
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        prompt = "".join(str(m.get("content") or "") for m in body.get("messages") or [])
    generated = "".join(
        str((c.get("message") or {}).get("content") or c.get("text") or "")
        for c in answer.get("choices") or []
    )
    if body.get("echo"):
        generated = generated.removeprefix(prompt)
    prompt_tokens, completion_tokens = -(-len(prompt) // 4), -(-len(generated) // 4)
    usage = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    return {**answer, "usage": usage}


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many clients connecting at once (the default is 5)


class FakeServer:
    """Runs a FakeOpenAI on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, fake: FakeOpenAI) -> None:
        handler = type("Handler", (_Handler,), {"fake": fake})
        self.fake = fake
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_VOCABULARY = [" the", " of", " and", " to", " in", " a", " is", " that", " for", " it", " as"]
_VOCABULARY += ["\t", "\n", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "ing", "ed"]


def starlette_json(payload: Any) -> bytes:
    """`payload` as vLLM's OpenAI server sends it: FastAPI's `JSONResponse` renders with
    Starlette's `json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
    separators=(",", ":"))` in UTF-8, and uvicorn sends it as one body with Content-Length."""
    return json.dumps(
        payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


_PIECE = re.compile(r"unknown| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s")


def bpe_like_pieces(prompt: str, chars: int = 3) -> list[str]:
    """`prompt` cut as a BPE tokenizer would roughly cut it: words with their leading space,
    single digits, runs of punctuation and single whitespace characters, "unknown" whole, and
    every other piece in parts of at most `chars` characters (a scoring prompt of ~3.3 KB gives
    ~1,480 positions, so its echo is ~650 KB)."""
    pieces: list[str] = []
    for piece in _PIECE.findall(prompt):
        if piece == "unknown":
            pieces.append(piece)
        else:
            pieces += [piece[i : i + chars] for i in range(0, len(piece), chars)]
    assert "".join(pieces) == prompt
    return pieces


def vllm_prompt_logprobs_echo(
    prompt: str,
    *,
    top: int = 15,
    model: str = "fake-model",
    seed: int = 0,
    chars: int = 4,
    pieces: list[str] | None = None,
) -> dict[str, Any]:
    """An answer shaped as vLLM's /completions with `echo` and `logprobs=top` (what the
    prompt-logprobs scorer gets): every prompt position (`pieces`, else tokens of `chars`
    characters) carries `top` alternatives with full-precision float logprobs (at an "unknown"
    the digits 0..10 among them, as a model that predicts activations there), plus text
    offsets, token logprobs, one generated token and `usage`. A scoring prompt of ~5.7 KB in
    4-character tokens gives ~644 KB (rendered by `starlette_json`, as vLLM sends it)."""
    rng = random.Random(seed)
    if pieces is None:
        pieces = [prompt[i : i + chars] for i in range(0, len(prompt), chars)]
    tokens = [*pieces, " the"]
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    top_logprobs: list[dict[str, float] | None] = [None]
    for token in tokens[1:]:
        alternatives = {token: math.log(rng.uniform(0.05, 0.95))}
        if token == "unknown":
            alternatives.update((str(d), math.log(rng.uniform(1e-4, 0.3))) for d in range(11))
        while len(alternatives) < top:
            alternatives[rng.choice(_VOCABULARY) + str(rng.randrange(1000))] = math.log(
                rng.uniform(1e-6, 0.05)
            )
        top_logprobs.append(alternatives)
    return {
        "id": f"cmpl-{rng.getrandbits(64):016x}",
        "object": "text_completion",
        "created": 1764547200,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": prompt + " the",
                "logprobs": {
                    "text_offset": offsets,
                    "token_logprobs": [None] + [math.log(rng.uniform(0.01, 1)) for _ in tokens[1:]],
                    "tokens": tokens,
                    "top_logprobs": top_logprobs,
                },
                "finish_reason": "length",
                "stop_reason": None,
                "prompt_logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": len(tokens) - 1,
            "total_tokens": len(tokens),
            "completion_tokens": 1,
        },
    }
