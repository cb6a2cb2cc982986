"""Prompt logprobs from the local model in-process: the paper's scorer at a usable speed.

llama.cpp's Python server answers `echo` + `logprobs` on /completions, but sorts the whole
vocabulary in Python at every prompt position: about 0.1 s per token, so a 2,800-token
simulation prompt takes minutes. Here the same model is loaded in-process
(`llama_cpp.Llama`, `logits_all=False`) and the prompt is decoded once, asking llama.cpp for
logits only at the positions the simulator reads: those right after a tab, where the
`token<TAB>unknown` slots are (every position, for prompts without a tab or short ones).

The answer has the shape of an OpenAI completions response with `echo`: the prompt's tokens,
and per position its top logprobs (None where none were computed). Each computed position
also lists the logprobs of "0".."10" (the digits the simulator reads), whatever their rank,
so the digit distribution is complete even when little probability lands on digits.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import BackendConfigError, BackendResponseError

DIGITS = tuple(str(i) for i in range(11))
ALL_POSITIONS_BELOW = 256
"""Prompts shorter than this (in tokens) get logprobs at every position."""


class Cancelled(Exception):
    """The caller went away; the computation stopped early."""


class PromptLogprobsEngine:
    """The local GGUF model, loaded on first use, answering echo requests (thread-safe)."""

    def __init__(
        self, model_path: Path, *, n_ctx: int = 8192, threads: int = 2, n_batch: int = 512
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.threads = threads
        self.n_batch = n_batch
        self._llm: Any = None
        self._pieces: list[bytes] = []
        self._digit_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BackendConfigError("llama-cpp-python is not installed") from None
            llm = Llama(
                str(self.model_path),
                n_ctx=self.n_ctx,
                n_batch=self.n_batch,
                n_ubatch=self.n_batch,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                logits_all=False,
                verbose=False,
            )
            self._pieces = [llm._model.detokenize([t]) for t in range(llm.n_vocab())]
            self._digit_ids = {}
            for digit in DIGITS:
                ids = llm.tokenize(digit.encode(), add_bos=False, special=False)
                if len(ids) == 1:
                    self._digit_ids[digit] = ids[0]
            self._llm = llm
        return self._llm

    def close(self) -> None:
        """Free the model."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def echo(
        self, prompt: str, top: int, model: str = "", stop: threading.Event | None = None
    ) -> JSONDict:
        """An OpenAI-style completions response echoing `prompt` with top logprobs.

        `stop`, when set, ends the work between two batches (raising `Cancelled`).
        """
        with self._lock:
            return self._echo(prompt, max(1, top), model, stop or threading.Event())

    def _echo(self, prompt: str, top: int, model: str, stop: threading.Event) -> JSONDict:
        import llama_cpp

        llm = self._load()
        ids: list[int] = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        if len(ids) > self.n_ctx:
            raise BackendResponseError(
                f"the prompt has {len(ids)} tokens; the local model's context is {self.n_ctx}"
            )
        pieces = [self._pieces[i] for i in ids]
        skip = 0
        while skip < len(pieces) and pieces[skip] == b"":  # BOS: not part of the text
            skip += 1
        every = len(ids) < ALL_POSITIONS_BELOW or not any(p.endswith(b"\t") for p in pieces)
        wanted = {k for k in range(len(ids) - 1) if every or pieces[k].endswith(b"\t")}
        ctx = llm._ctx
        ctx.kv_cache_clear()
        batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        n_vocab = llm.n_vocab()
        top_logprobs: list[dict[str, float] | None] = [None] * len(ids)
        try:
            for start in range(0, len(ids), self.n_batch):
                if stop.is_set():
                    raise Cancelled
                chunk = ids[start : start + self.n_batch]
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i] = token
                    batch.pos[i] = start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = (start + i) in wanted
                if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
                    raise BackendResponseError("the local model failed to decode the prompt")
                for i in range(len(chunk)):
                    if (start + i) in wanted:
                        pointer = llama_cpp.llama_get_logits_ith(ctx.ctx, i)
                        logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,))
                        top_logprobs[start + i + 1] = self._top(logits, top)
        finally:
            llama_cpp.llama_batch_free(batch)
        tokens = [_token_text(p) for p in pieces]
        return {
            "object": "text_completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": prompt,
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": tokens[skip:],
                        "top_logprobs": top_logprobs[skip:],
                        "token_logprobs": [None] * (len(ids) - skip),
                    },
                }
            ],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 0},
        }

    def _top(self, logits: np.ndarray[Any, Any], top: int) -> dict[str, float]:
        values = logits.astype(np.float64)
        values -= values.max()
        logprobs = values - np.log(np.exp(values).sum())
        best = np.argpartition(-logprobs, top)[:top]
        result: dict[str, float] = {}
        for token_id in [*best.tolist(), *self._digit_ids.values()]:
            text = _token_text(self._pieces[token_id])
            result[text] = max(result.get(text, -np.inf), float(logprobs[token_id]))
        return result


def _token_text(piece: bytes) -> str:
    """A token as OpenAI writes it: text, or "bytes:\\xNN" for a partial UTF-8 sequence."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)
