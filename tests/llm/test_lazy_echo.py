"""An echo's top logprobs decoded when read (`parse_answer`, `LazyEntries`): the answer equals
what `parse_json` decodes and behaves as that list for every access; the check of all values
from the bytes never lets through what the value-by-value check refuses, and where it can't
decide, the entries are read and checked as before (same errors); the scorer's results are the
same; the client and the cache hand out such answers."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from neuron_desk.core.errors import BackendResponseError
from neuron_desk.data.store import Store
from neuron_desk.llm.answers import LazyEntries, RawAnswer, dumps, parse_answer, parse_json
from neuron_desk.llm.cache import cache_key
from neuron_desk.llm.client import OpenAICompatibleClient
from neuron_desk.llm.session import LLMSession
from neuron_desk.method.simulators import (
    ExplanationNeuronSimulator,
    _check_top_map,
    check_top_maps,
    parse_prompt_logprobs_response,
)
from tests.fake_openai import (
    FakeOpenAI,
    FakeServer,
    bpe_like_pieces,
    starlette_json,
    vllm_prompt_logprobs_echo,
)

WHERE = "prompt-logprobs simulation"
TOKENS = [" The", " cat", " sat", "\t", " on", " 10", " mats", "."]


def scoring_prompt() -> str:
    prompt = ExplanationNeuronSimulator("m", "cats").make_simulation_prompt(TOKENS)
    assert isinstance(prompt, str)
    return prompt


def echo(prompt: str | None = None, **options: Any) -> dict[str, Any]:
    prompt = prompt if prompt is not None else scoring_prompt()
    return vllm_prompt_logprobs_echo(prompt, pieces=bpe_like_pieces(prompt), **options)


def top_of(answer: dict[str, Any]) -> Any:
    return answer["choices"][0]["logprobs"]["top_logprobs"]


def echo_bytes(top: list[Any], render: str = "starlette") -> bytes:
    """A minimal echo around `top` (tokens to match), rendered compact, spaced or indented."""
    answer = {
        "choices": [
            {
                "text": "x",
                "logprobs": {
                    "tokens": ["t"] * len(top),
                    "token_logprobs": [None] * len(top),
                    "top_logprobs": top,
                },
            }
        ]
    }
    if render == "starlette":
        return starlette_json(answer)
    if render == "python":
        return json.dumps(answer).encode()
    return json.dumps(answer, indent=2).encode()


def careful(entries: list[Any]) -> str | None:
    """The value-by-value check: the error it raises, or None."""
    try:
        for entry in entries:
            _check_top_map(entry, WHERE)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def checked(entries: Any) -> str | None:
    try:
        check_top_maps(entries, WHERE)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def test_an_echo_decodes_to_what_orjson_decodes_with_its_top_logprobs_lazy() -> None:
    raw = starlette_json(echo())
    lazy, plain = parse_answer(raw), parse_json(raw)
    top = top_of(lazy)
    assert isinstance(top, LazyEntries) and isinstance(top, list)
    assert type(top_of(plain)) is list
    assert top._undecoded == len(top) == len(top_of(plain))
    assert top[7] == top_of(plain)[7] and top[-1] == top_of(plain)[-1]
    assert top._undecoded == len(top) - 2  # only what was read is decoded
    assert lazy == plain and plain == lazy and (lazy != plain) is False
    assert top[1:4] == top_of(plain)[1:4] and top[::-50] == top_of(plain)[::-50]
    assert list(top) == top_of(plain) and list(reversed(top)) == top_of(plain)[::-1]
    assert top_of(plain)[5] in top and top.index(top_of(plain)[5]) == 5
    assert repr(top) == repr(top_of(plain))
    assert copy.copy(top) == copy.deepcopy(top) == pickle.loads(pickle.dumps(top))
    assert type(pickle.loads(pickle.dumps(lazy))["choices"][0]["logprobs"]["top_logprobs"]) is list
    assert top + [None] == [*top_of(plain), None]  # noqa: RUF005 (list's + is tested)
    assert dumps(RawAnswer(lazy, raw)) == raw  # stored as the bytes, never re-encoded
    fresh = parse_answer(raw)
    top_of(fresh)[9]  # one entry decoded, the others not
    assert parse_json(dumps({**fresh})) == plain  # a new dict (no raw bytes): encoded
    assert top_of(fresh)._undecoded == len(top) - 1  # (the undecoded as their bytes)
    with pytest.raises(TypeError):
        orjson.dumps(fresh)  # it reads the list's storage: the undecoded entries
    edited = {**fresh, "extra": 10**30}  # beyond orjson's ints: json.dumps, which iterates
    assert json.loads(dumps(edited)) == {**plain, "extra": 10**30}
    assert json.dumps(fresh) == json.dumps(plain)
    with pytest.raises(TypeError):
        hash(top)


def test_the_other_fields_are_decoded_as_before() -> None:
    raw = starlette_json(echo())
    lazy, plain = parse_answer(raw), parse_json(raw)
    for key in ("tokens", "token_logprobs", "text_offset"):
        assert type(lazy["choices"][0]["logprobs"][key]) is list
        assert lazy["choices"][0]["logprobs"][key] == plain["choices"][0]["logprobs"][key]
    assert lazy["usage"] == plain["usage"] and list(lazy) == list(plain)
    assert list(lazy["choices"][0]) == list(plain["choices"][0])  # key order kept


@pytest.mark.parametrize("render", ["starlette", "python"])
def test_a_valid_echo_is_checked_from_its_bytes(render: str) -> None:
    answer = echo()
    raw = starlette_json(answer) if render == "starlette" else json.dumps(answer).encode()
    top = top_of(parse_answer(raw))
    assert b"\\n" in raw  # keys with escapes ("\n", "\t") are among them
    assert top.values_are_logprobs()
    assert checked(top) is None and top._undecoded == len(top)  # nothing decoded to check


def test_editing_the_list_makes_it_read_its_entries() -> None:
    top = top_of(parse_answer(starlette_json(echo())))
    top[3] = {"x": 0.5}
    assert not top.values_are_logprobs()
    assert checked(top) == careful(list(top)) is not None
    appended = top_of(parse_answer(starlette_json(echo())))
    appended.append({"y": "bad"})
    assert not appended.values_are_logprobs() and checked(appended) is not None


BAD_VALUES: list[Any] = [
    0.5,
    1,
    "-1",
    None,
    True,
    {"n": -1.0},
    [-1.0],
    10**400,
    -(10**400),
    1e-7,
    -0.0,
    0,
    -1e-320,
]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("render", ["starlette", "python", "indented"])
def test_a_value_at_a_position_never_read_is_checked_as_before(value: Any, render: str) -> None:
    answer = echo()
    plain_top = top_of(answer)
    plain_top[3] = {**plain_top[3], " odd": value}
    raw = echo_bytes(plain_top, render)
    lazy = top_of(parse_answer(raw))
    expected = careful(top_of(parse_json(raw)))
    assert checked(lazy) == expected
    if lazy.values_are_logprobs():
        assert expected is None


KEYS = ['":-)', ":", '"', "\\", "\\\\", ":-", '\\":-', "\n", "\t", "-", '"-', "é", "𝄞", "a,b", "}"]


def test_tricky_keys_never_pass_a_bad_value() -> None:
    """Random maps with keys made of quotes, colons, minus signs and backslashes, and values of
    every kind: whenever the bytes say "all log-probabilities", the careful check agrees, and
    the check's answer is always the careful one."""
    rng = random.Random(12)
    values: list[Any] = [-1.5, -0.0, -3, 0.0, 0.25, "x", None, [1], {"k": -1}, -1e300, -(10**20)]
    decided = 0
    for case in range(400):
        top: list[Any] = [None]
        for _ in range(rng.randrange(1, 6)):
            entry = {}
            for _ in range(rng.randrange(0, 5)):
                key = "".join(rng.choice(KEYS) for _ in range(rng.randrange(0, 4)))
                bad = rng.random() < 0.08
                entry[key] = rng.choice(values) if bad else -rng.random() * 10
            top.append(entry if rng.random() < 0.95 else rng.choice(values))
        raw = echo_bytes(top, rng.choice(["starlette", "python", "indented"]))
        lazy = top_of(parse_answer(raw))
        if not isinstance(lazy, LazyEntries):
            continue
        expected = careful(top_of(parse_json(raw)))
        if lazy.values_are_logprobs():
            decided += 1
            assert expected is None, (case, raw)
        assert checked(lazy) == expected, (case, raw)
    assert decided > 50


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-Infinity}]}}]}',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":NaN}]}}]}',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"\xff":-1.0}]}}]}',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-1.0},]}}]}',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-1.0}]}}]',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-1.0}],'
        b'"top_logprobs":[{"b":-2.0}]}}]}',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-1.0}]},'
        b'"logprobs":{"top_logprobs":[{"b":-2.0}]}}]}',
        b'{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-1.0}]}}],'
        b'"choices":[{"logprobs":{"top_logprobs":null}}]}',
        b'{"choices":[{"logprobs":{"top_logprobs":null}}],'
        b'"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"a":-1.0}]}}]}',
        b'{"choices":[{"logprobs":"none","token_logprobs":[]}],"top_logprobs":[1]}',
        b'[{"top_logprobs":[{"a":-1}],"token_logprobs":[]}]',
        '{"choices":[{"logprobs":{"token_logprobs":[],"top_logprobs":[{"é":-1.0}]}}]}'.encode(),
    ],
)
def test_odd_bodies_decode_or_fail_as_parse_json_does(raw: bytes) -> None:
    try:
        expected: Any = parse_json(raw)
    except ValueError as error:
        with pytest.raises(type(error)):
            parse_answer(raw)
        return
    got = parse_answer(raw)
    assert repr(got) == repr(expected)  # (NaN is not equal to itself)


def test_answers_that_are_not_echoes_are_plain() -> None:
    chat = {"choices": [{"logprobs": {"content": [{"token": "a", "top_logprobs": []}]}}]}
    assert type(parse_answer(starlette_json(chat))) is dict
    assert parse_answer(starlette_json(chat)) == chat
    empty = echo_bytes([])
    assert top_of(parse_answer(empty)) == [] and type(top_of(parse_answer(empty))) is list


def test_the_scorer_reads_the_same_simulation_from_a_lazy_answer() -> None:
    prompt = scoring_prompt()
    for seed in range(3):
        raw = starlette_json(echo(prompt, seed=seed))
        lazy = parse_prompt_logprobs_response(parse_answer(raw), prompt, TOKENS, "m")
        plain = parse_prompt_logprobs_response(parse_json(raw), prompt, TOKENS, "m")
        assert lazy == plain and not lazy.missing_positions
        bad = echo(prompt, seed=seed)
        top_of(bad)[2] = {" x": 0.5}  # a position the scorer does not read
        with pytest.raises(BackendResponseError, match="not a log-probability"):
            parse_prompt_logprobs_response(parse_answer(starlette_json(bad)), prompt, TOKENS)


def test_the_client_and_the_cache_answer_with_lazy_echoes(tmp_path: Path) -> None:
    prompt = scoring_prompt()
    fake = FakeOpenAI()
    simulator_tokens = TOKENS

    async def run(store: Store) -> list[Any]:
        with FakeServer(fake) as server:
            async with OpenAICompatibleClient(server.base_url) as client:
                session = LLMSession(client, store=store)
                simulator = ExplanationNeuronSimulator("fake-model", "cats", backend=session)
                first = await simulator.simulate(simulator_tokens)
                sent = len(fake.requests)
                again = await simulator.simulate(simulator_tokens)  # from the cache
                assert len(fake.requests) == sent
                body = {
                    "model": "fake-model",
                    "prompt": prompt,
                    "max_tokens": 1,
                    "echo": True,
                    "logprobs": 15,
                    "temperature": 0,
                }
                fresh, cached = await client.completions(body), await session.completions(body)
                assert session.cache is not None
                stored = session.cache.get_bytes(cache_key(session.endpoint, "/completions", body))
                return [first, again, fresh, cached, stored]

    store = Store.open(tmp_path / "s.sqlite3")
    first, again, fresh, cached, stored = asyncio.run(run(store))
    store.close()
    assert first == again and first.expected_activations
    assert isinstance(top_of(fresh), LazyEntries) and isinstance(top_of(cached), LazyEntries)
    assert fresh == parse_json(fresh.raw)
    assert cached == parse_json(stored)
    assert top_of(fresh).values_are_logprobs()  # the fake's json.dumps(": ") form
