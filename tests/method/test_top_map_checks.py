"""The quick paths of reading an echo agree with the careful ones: the check of the top-logprob
maps lets through exactly what the value-by-value check lets through and refuses the rest with
its error; token offsets are those of the byte-by-byte reading."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from neuron_desk.method.simulators import (
    _check_top_map,
    check_top_maps,
    token_char_offsets,
    token_char_offsets_by_bytes,
)
from tests.fake_openai import vllm_prompt_logprobs_echo

WHERE = "prompt-logprobs simulation"


def careful(entries: list[Any]) -> str | None:
    """The original check, entry by entry: the error it raises (type and message), or None."""
    try:
        for entry in entries:
            _check_top_map(entry, WHERE)
    except Exception as error:  # whatever it raises, the quick check must raise too
        return f"{type(error).__name__}: {error}"
    return None


def quick(entries: list[Any]) -> str | None:
    try:
        check_top_maps(entries, WHERE)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def echo_top() -> list[Any]:
    answer = vllm_prompt_logprobs_echo("We're studying neurons. " * 40)
    top: list[Any] = answer["choices"][0]["logprobs"]["top_logprobs"]
    return top


def test_a_valid_echo_passes_both() -> None:
    top = echo_top()
    assert top[0] is None and len(top) > 200
    assert quick(top) is None and careful(top) is None


class Sub(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    "bad",
    [
        math.nan,
        math.inf,
        0.5,
        2e-6,
        True,
        False,
        "-1.0",
        None,
        [-1.0],
        {"nested": -1.0},
        -3,
        0,
        5,
        -math.inf,
        1e-6,
        -0.0,
        10**400,
    ],
    ids=lambda value: repr(value)[:12],
)
@pytest.mark.parametrize("position", [1, 57, -1])
def test_one_odd_value_gets_the_same_verdict_and_error(bad: Any, position: int) -> None:
    top = copy.deepcopy(echo_top())
    entry = top[position]
    key = list(entry)[7]
    entry[key] = bad
    assert quick(top) == careful(top)


def test_the_first_bad_value_is_the_one_named() -> None:
    top = copy.deepcopy(echo_top())
    first, second = top[10], top[20]
    first[next(iter(first))] = 0.25
    second[next(iter(second))] = math.nan
    assert quick(top) == careful(top)
    error = quick(top)
    assert error is not None and error.startswith("BackendResponseError") and "0.25" in error


def test_entries_that_are_not_maps_are_skipped_as_before_and_subclasses_checked() -> None:
    top: list[Any] = [None, "text", 3, {"a": -1.0}, Sub(b=0.5)]
    assert quick(top) == careful(top) is not None
    top[-1] = Sub(b=-0.5)
    assert quick(top) is None and careful(top) is None
    assert quick([]) is None and quick([None, {}]) is None


def test_nan_hidden_among_valid_values_is_found() -> None:
    """max() skips a NaN after the first value; the check must not."""
    top: list[Any] = [{"a": -1.0, "b": math.nan, "c": -2.0}]
    assert quick(top) == careful(top) is not None


def outcome(function: Any, tokens: list[str]) -> Any:
    try:
        return function(tokens)
    except Exception as error:  # the same error, whichever path raises it
        return f"{type(error).__name__}: {error}"


@pytest.mark.parametrize(
    "tokens",
    [
        [],
        ["We", "'re", " studying", "\t", "unknown", "\n"],
        [" caf", "\u00e9", " \u65e5\u672c", "\u2014", " \u2026"],
        ["bytes:\\xe2\\x80", "bytes:\\x94", " after"],  # OpenAI's partial UTF-8
        ["\\xe2\\x80", "\\x94", "x"],  # DeepSeek's bare escapes
        ["a\\xzz", "b"],  # looks like an escape, is text
        ["text bytes: here", "x"],
        ["bytes:\\xe2", " end"],  # an incomplete character left over
        ["ok", "\ud800", "x"],  # a lone surrogate: both refuse it the same way
    ],
    ids=repr,
)
def test_token_offsets_match_the_byte_by_byte_reading(tokens: list[str]) -> None:
    assert outcome(token_char_offsets, tokens) == outcome(token_char_offsets_by_bytes, tokens)


def test_token_offsets_of_a_real_size_echo() -> None:
    answer = vllm_prompt_logprobs_echo("We're studying neurons.\t unknown\n" * 170)
    tokens = answer["choices"][0]["logprobs"]["tokens"]
    text, offsets = token_char_offsets(tokens)
    assert (text, offsets) == token_char_offsets_by_bytes(tokens)
    assert offsets == answer["choices"][0]["logprobs"]["text_offset"]
