"""Issue 14.1: no silent change of precision in the simulators' parsers."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from neuron_desk.core.errors import BackendResponseError
from neuron_desk.method.simulators import (
    SOURCE_DISTRIBUTION,
    SOURCE_MISSING,
    SOURCE_WRITTEN,
    align_chat_entries,
    count_sources,
    parse_chat_generation_response,
    parse_chat_next_token,
    parse_completion_next_token,
    parse_prompt_logprobs_response,
)

LN = math.log
SEVEN = [{"token": "5", "logprob": LN(0.5)}, {"token": "9", "logprob": LN(0.5)}]
"""Top logprobs whose expected value is 7 while the written digit is 5."""


def entry(token: str, top: list[dict[str, Any]] | None = None, raw: bytes | None = None) -> dict:
    out: dict[str, Any] = {"token": token, "logprob": -0.1, "top_logprobs": top or []}
    if raw is not None:
        out["bytes"] = list(raw)
    return out


def answer(content: str, entries: list[dict] | None) -> dict:
    choice: dict[str, Any] = {"message": {"role": "assistant", "content": content}}
    if entries is not None:
        choice["logprobs"] = {"content": entries}
    return {"choices": [choice]}


def dash_entries(style: str) -> list[dict]:
    """The answer "<start>\\n —\\t5\\n b\\t5\\n<end>" with "—" split over two tokens."""
    dash = "—".encode()
    halves = {
        "bytes": [entry("\ufffd", raw=dash[:2]), entry("\ufffd", raw=dash[2:])],
        "fffd": [entry("\ufffd"), entry("\ufffd")],
        "escaped": [entry("\\xe2\\x80"), entry("\\x94")],
        "openai": [entry("bytes:\\xe2\\x80"), entry("bytes:\\x94")],
    }[style]
    return [
        entry("<start>"),
        entry("\n"),
        entry(" "),
        *halves,
        entry("\t"),
        entry("5", SEVEN),
        entry("\n"),
        entry(" b"),
        entry("\t"),
        entry("5", SEVEN),
        entry("\n"),
        entry("<end>"),
    ]


@pytest.mark.parametrize("style", ["bytes", "fffd", "escaped", "openai"])
def test_partial_characters_keep_the_distribution(style: str) -> None:
    content = "<start>\n —\t5\n b\t5\n<end>"
    result = parse_chat_generation_response(answer(content, dash_entries(style)), [" —", " b"])
    assert result.expected_activations == pytest.approx([7.0, 7.0])
    assert result.value_sources == [SOURCE_DISTRIBUTION, SOURCE_DISTRIBUTION]


def test_unmatched_entries_resume_at_the_next_line() -> None:
    content = "<start>\n é\t5\n b\t5\n<end>"
    entries = dash_entries("fffd")
    entries[3:5] = [entry("x"), entry("y")]  # the server spelled something else there
    result = parse_chat_generation_response(answer(content, entries), [" é", " b"])
    assert result.value_sources == [SOURCE_WRITTEN, SOURCE_DISTRIBUTION]
    assert result.expected_activations == pytest.approx([5.0, 7.0])
    spans = align_chat_entries(content, entries)
    assert spans[3] is None and spans[-3] is not None


def test_tokens_with_markers_tabs_and_newlines_parse() -> None:
    tokens = ["<start>", "<end>", "a\tb", "\n", " x"]
    lines = ["<start>\t1", "<end>\t2", "a\\tb\t3", "\\n\t4", " x\t0"]
    content = "<start>\n" + "\n".join(lines) + "\n<end>"
    result = parse_chat_generation_response(answer(content, None), tokens)
    assert result.expected_activations == [1.0, 2.0, 3.0, 4.0, 0.0]
    assert result.missing_positions == []


def test_missing_half_and_bad_logprobs_are_recorded_or_refused() -> None:
    content = "<start>\n a\t5\n b\t5\n<end>"
    full = [
        entry("<start>"),
        entry("\n"),
        entry(" a"),
        entry("\t"),
        entry("5", SEVEN),
        entry("\n"),
        entry(" b"),
        entry("\t"),
        entry("5", SEVEN),
        entry("\n"),
        entry("<end>"),
    ]
    none = parse_chat_generation_response(answer(content, None), [" a", " b"])
    assert none.value_sources == [SOURCE_WRITTEN, SOURCE_WRITTEN]
    half = parse_chat_generation_response(answer(content, full[:6]), [" a", " b"])
    assert half.value_sources == [SOURCE_DISTRIBUTION, SOURCE_WRITTEN]
    assert half.expected_activations == pytest.approx([7.0, 5.0])
    assert count_sources([none, half]) == {
        SOURCE_DISTRIBUTION: 1,
        SOURCE_WRITTEN: 3,
        SOURCE_MISSING: 0,
    }
    doubled = parse_chat_generation_response(answer(content, full + full), [" a", " b"])
    assert doubled.expected_activations == pytest.approx([7.0, 7.0])
    nan = [dict(e) for e in full]
    nan[4] = entry("5", [{"token": "5", "logprob": float("nan")}])
    with pytest.raises(BackendResponseError, match="not a log-probability"):
        parse_chat_generation_response(answer(content, nan), [" a", " b"])
    with pytest.raises(BackendResponseError, match="at most 4"):
        parse_chat_generation_response(answer(content, full), [" a", " b"], max_tokens=4)


def test_next_token_answers_are_checked_against_the_request() -> None:
    one = entry("3", [{"token": "3", "logprob": LN(0.5)}, {"token": "4", "logprob": LN(0.5)}])
    chat = {"choices": [{"logprobs": {"content": [one, entry("\n")]}}]}
    assert parse_chat_next_token(chat, max_tokens=2) == pytest.approx({3: 0.5, 4: 0.5})
    doubled = {"choices": [{"logprobs": {"content": [one, entry("\n")] * 2}}]}
    with pytest.raises(BackendResponseError, match="at most 2"):
        parse_chat_next_token(doubled, max_tokens=2)
    completion = {"choices": [{"logprobs": {"tokens": ["3"], "top_logprobs": [{"3": 0.0}] * 2}}]}
    with pytest.raises(BackendResponseError, match="2 top_logprobs for 1 tokens"):
        parse_completion_next_token(completion, max_tokens=2)


def test_too_many_choices_are_refused_at_once() -> None:
    many = {"choices": [{"message": {"content": "<start>\n a\t1\n<end>"}}] * 100_000}
    started = time.perf_counter()
    with pytest.raises(BackendResponseError, match="100000 choices for a request of 1"):
        parse_chat_generation_response(many, [" a"])
    with pytest.raises(BackendResponseError, match="choices"):
        parse_prompt_logprobs_response(many, "x", [" a"])
    assert time.perf_counter() - started < 0.5
