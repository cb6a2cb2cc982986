"""The simulators' parsers against realistic responses, including awkward tokenizations."""

from __future__ import annotations

import math
import re

import pytest

from neuron_desk.core.errors import MethodError, SimulationParseError
from neuron_desk.method import ExplanationNeuronSimulator, FewShotExampleSet, PromptFormat
from neuron_desk.method.simulators import (
    digit_distribution,
    escape_token,
    parse_chat_generation_response,
    parse_chat_next_token,
    parse_completion_next_token,
    parse_prompt_logprobs_response,
    token_char_offsets,
)

LN = math.log


def digits(value: int) -> dict[str, float]:
    return {str(value): LN(0.7), "0": LN(0.1) if value else LN(0.8), "unknown": LN(0.1)}


def echo_response(prompt: str, pieces: list[str], values: dict[int, int], prefix: str = "") -> dict:
    """An echo response whose tokens are `pieces`; `values[i]` sets the top logprobs at piece i."""
    assert token_char_offsets(pieces)[0] == prefix + prompt
    top = [digits(values[i]) if i in values else {p: -0.1} for i, p in enumerate(pieces)]
    top[0] = None
    return {
        "choices": [{"text": prefix + prompt, "logprobs": {"tokens": pieces, "top_logprobs": top}}]
    }


def bpe_like(text: str) -> list[str]:
    """Split roughly as a BPE tokenizer would: words with a leading space, tabs, newlines."""
    return re.findall(r"\t|\n|unknown| ?[^\s]+| ", text)


def simulator() -> ExplanationNeuronSimulator:
    return ExplanationNeuronSimulator("m", "vowels", few_shot_example_set=FewShotExampleSet.TEST)


def test_prompt_logprobs_reads_each_unknown_slot() -> None:
    tokens = [" Hello", " world", "!"]
    prompt = simulator().make_simulation_prompt(tokens)
    assert isinstance(prompt, str)
    pieces = bpe_like(prompt)
    slots = [i for i, p in enumerate(pieces) if p == "unknown"][-3:]
    result = parse_prompt_logprobs_response(
        echo_response(prompt, pieces, dict(zip(slots, [3, 0, 9], strict=False))),
        prompt,
        tokens,
        "m",
    )
    assert result.tokens == tokens
    assert result.missing_positions == []
    assert result.expected_activations[0] == pytest.approx((3 * 0.7 + 0 * 0.1) / 0.8)
    assert result.expected_activations[1] == pytest.approx(0.0)
    assert result.method == "all_at_once_prompt_logprobs" and result.model == "m"


def test_prompt_logprobs_with_tabs_newlines_and_split_unicode() -> None:
    tokens = ["\t", "\n", " café", "a\tb", " 日本"]
    prompt = simulator().make_simulation_prompt(tokens)
    assert isinstance(prompt, str)
    section = prompt.index("\n<start>\n", prompt.index("Neuron 2")) + len("\n<start>\n")
    head = bpe_like(prompt[:section])
    # The simulator's tokenizer: "\t\t" merged, " café" split with "é" as two byte tokens,
    # "日本" as bytes of one character split across tokens.
    body = [
        "\t\t",
        "unknown",
        "\n",
        "\n",
        "\t",
        "unknown",
        "\n",
        " caf",
        "bytes:\\xc3",
        "bytes:\\xa9",
        "\t",
        "unknown",
        "\n",
        "a",
        "\t",
        "b",
        "\t",
        "unknown",
        "\n",
        " ",
        "bytes:\\xe6\\x97",
        "bytes:\\xa5",
        "本",
        "\t",
        "unknown",
        "\n",
        "<",
        "end",
        ">",
        "\n",
    ]
    pieces = head + body
    text, _ = token_char_offsets(pieces)
    assert text == prompt
    slots = [i for i, p in enumerate(pieces) if p == "unknown"][-5:]
    response = echo_response(prompt, pieces, dict(zip(slots, [1, 2, 10, 4, 5], strict=False)))
    result = parse_prompt_logprobs_response(response, prompt, tokens)
    assert result.missing_positions == []
    assert [round(v, 3) for v in result.expected_activations] == [
        round(e, 3)
        for e in [
            (1 * 0.7) / 0.8,
            (2 * 0.7) / 0.8,
            (10 * 0.7) / 0.8,
            (4 * 0.7) / 0.8,
            (5 * 0.7) / 0.8,
        ]
    ]


def test_prompt_logprobs_reports_merged_slots_as_missing() -> None:
    tokens = [" a", " b", " c"]
    prompt = simulator().make_simulation_prompt(tokens)
    assert isinstance(prompt, str)
    pieces = bpe_like(prompt)
    # Merge the tab into the last "unknown": that slot can't be read.
    last = max(i for i, p in enumerate(pieces) if p == "unknown")
    pieces[last - 1 : last + 1] = ["\tunknown"]
    slots = [i for i, p in enumerate(pieces) if p == "unknown"][-2:]
    result = parse_prompt_logprobs_response(
        echo_response(prompt, pieces, dict(zip(slots, [5, 6], strict=False))), prompt, tokens
    )
    assert result.missing_positions == [2]
    assert result.expected_activations[2] == 0.0


def test_prompt_logprobs_with_a_bos_prefix_and_no_digit_mass() -> None:
    tokens = [" x", " y"]
    prompt = simulator().make_simulation_prompt(tokens)
    assert isinstance(prompt, str)
    pieces = ["<s>", *bpe_like(prompt)]
    slots = [i for i, p in enumerate(pieces) if p == "unknown"][-2:]
    response = echo_response(prompt, pieces, {slots[0]: 7}, prefix="<s>")
    result = parse_prompt_logprobs_response(response, prompt, tokens)
    assert result.missing_positions == [1]  # its top logprobs hold no digit at all
    with pytest.raises(SimulationParseError, match="no usable prediction for 2 of 2"):
        parse_prompt_logprobs_response(
            echo_response(prompt, pieces, {}, prefix="<s>"), prompt, tokens
        )


def test_prompt_logprobs_needs_echo() -> None:
    prompt = simulator().make_simulation_prompt([" a"])
    assert isinstance(prompt, str)
    with pytest.raises(SimulationParseError, match="no logprobs"):
        parse_prompt_logprobs_response({"choices": [{"text": "x"}]}, prompt, [" a"])
    response = echo_response("other", ["other"], {})
    with pytest.raises(SimulationParseError, match="did not echo"):
        parse_prompt_logprobs_response(response, prompt, [" a"])


def test_prompt_logprobs_refuses_chat_prompts() -> None:
    sim = ExplanationNeuronSimulator("m", "e", prompt_format=PromptFormat.HARMONY_V4)
    with pytest.raises(MethodError, match="completions prompt"):
        import asyncio

        asyncio.run(sim.simulate(["a"]))


def test_digit_distribution_splits_one_from_ten() -> None:
    top = {"1": LN(0.6), "0": LN(0.4)}
    assert digit_distribution(top) == pytest.approx({0: 0.4, 1: 0.6})
    split = digit_distribution(top, after_one={"0": LN(0.75), "\n": LN(0.25)})
    assert split == pytest.approx({0: 0.4, 1: 0.15, 10: 0.45})
    assert digit_distribution({"10": LN(0.5), "1": LN(0.5)}, after_one={"0": 0.0}) == pytest.approx(
        {1: 0.5, 10: 0.5}
    )
    assert digit_distribution({" 5": LN(0.5), "5": LN(0.25), "x": LN(0.25)}) == pytest.approx(
        {5: 1.0}
    )
    assert digit_distribution({"x": 0.0, "11": 0.0}) is None


def chat_response(
    content: str, pieces: list[str] | None, tops: dict[int, dict[str, float]]
) -> dict:
    choice: dict = {"message": {"role": "assistant", "content": content}}
    if pieces is not None:
        assert "".join(pieces) == content
        choice["logprobs"] = {
            "content": [
                {
                    "token": p,
                    "logprob": -0.1,
                    "top_logprobs": [
                        {"token": t, "logprob": lp} for t, lp in tops.get(i, {p: -0.1}).items()
                    ],
                }
                for i, p in enumerate(pieces)
            ]
        }
    return {"choices": [choice]}


def test_next_token_parsers_read_two_step_ten() -> None:
    chat = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {
                            "token": "1",
                            "top_logprobs": [
                                {"token": "1", "logprob": LN(0.9)},
                                {"token": "0", "logprob": LN(0.1)},
                            ],
                        },
                        {
                            "token": "0",
                            "top_logprobs": [
                                {"token": "0", "logprob": LN(0.8)},
                                {"token": "\n", "logprob": LN(0.2)},
                            ],
                        },
                    ]
                }
            }
        ]
    }
    assert parse_chat_next_token(chat) == pytest.approx({0: 0.1, 1: 0.18, 10: 0.72})
    completion = {
        "choices": [
            {
                "logprobs": {
                    "tokens": ["3", "\n"],
                    "top_logprobs": [{"3": LN(0.5), "4": LN(0.5)}, {"\n": 0.0}],
                }
            }
        ]
    }
    assert parse_completion_next_token(completion) == pytest.approx({3: 0.5, 4: 0.5})
    with pytest.raises(SimulationParseError):
        parse_chat_next_token({"choices": [{"message": {"content": "3"}}]})


def test_chat_generation_aligns_lines_robustly() -> None:
    tokens = [" The", "\t", "\n", " café", " cat", " sat", " on"]
    lines = [
        "The\t2",  # the model dropped the leading space
        f"{escape_token(chr(9))}\t0",  # a tab token, written escaped
        "\\n\t1",  # a newline token, written escaped
        " café\t10",  # "10" comes as "1","0" below
        " dog\t4",  # garbled: no line for " cat"
        " sat\t7",
        " on\t0",
    ]
    content = "<start>\n" + "\n".join(lines) + "\n<end>"
    pieces = re.findall(r"<start>|<end>|\n|\t|\d| ?[^\s\d]+|\\[nt]", content)
    assert "".join(pieces) == content
    tops = {}
    for i, p in enumerate(pieces):
        if p.isdigit() and pieces[i - 1] == "\t":
            tops[i] = {p: LN(0.9), "0" if p != "0" else "1": LN(0.1)}
    ten = next(i for i, p in enumerate(pieces) if p == "1" and pieces[i + 1] == "0")
    tops[ten + 1] = {"0": LN(0.9), "\n": LN(0.1)}
    result = parse_chat_generation_response(chat_response(content, pieces, tops), tokens, "m")
    assert result.missing_positions == [4]
    ev = result.expected_activations
    assert ev[0] == pytest.approx(0.9 * 2)
    assert ev[1] == pytest.approx(0.1 * 1)
    assert ev[3] == pytest.approx(0.9 * 0.9 * 10 + 0.9 * 0.1 * 1)
    assert ev[5] == pytest.approx(0.9 * 7)
    assert result.method == "all_at_once_chat_generation"


def test_chat_generation_without_logprobs_uses_written_numbers() -> None:
    content = "Here you go:\n<start>\n a\t3\n b\t11\n<end>"
    result = parse_chat_generation_response(chat_response(content, None, {}), [" a", " b"])
    assert result.expected_activations == [3.0, 0.0]
    assert result.missing_positions == [1]  # 11 is not an activation
    assert result.distribution_values[0] == [3.0]


def test_chat_generation_that_cannot_be_aligned_is_an_error() -> None:
    content = "I think this neuron fires on vowels."
    with pytest.raises(SimulationParseError, match="no usable prediction for 3 of 3"):
        parse_chat_generation_response(chat_response(content, None, {}), [" a", " b", " c"])


def test_escape_token() -> None:
    assert escape_token("a\tb\n\\") == "a\\tb\\n\\\\"
