"""Simulators: predict a neuron's activations on a text from an explanation (DESIGN §3).

Three ways to read a prediction from an LLM, each recorded on its result as `method`:

- `ExplanationNeuronSimulator` (all at once, prompt logprobs): the paper's scorer. One
  completions request per sequence with `echo` + `logprobs`; the prediction for each token is
  the distribution over "0".."10" at its "unknown" slot. Needs a completions endpoint that
  returns prompt logprobs (vLLM, llama.cpp's Python server, OpenAI's davinci-002).
- `ExplanationTokenByTokenSimulator` (one at a time): one request per token, reading the top
  logprobs of the single next token. Chat endpoints with `top_logprobs` suffice.
- `ChatGenerationSimulator` (all at once, chat generation): one chat request per sequence; the
  model rewrites the `token<TAB>unknown` lines with numbers, and the distribution is read from
  the top logprobs at each number it writes. Lines are aligned back to the tokens; a token
  whose line can't be found is reported in `missing_positions`, never silently scored 0.

Tokenizers that write "10" as "1","0" are handled where the second digit is visible (the last
two simulators read the two-step distribution). Positions with no probability on any digit are
reported as missing instead of given an invented value.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from neuron_desk.core.backend import JSONDict, LLMBackend
from neuron_desk.core.errors import (
    BackendError,
    BackendHTTPError,
    BackendResponseError,
    BackendUnavailable,
    MethodError,
    SimulationParseError,
)
from neuron_desk.core.model import (
    ActivationRecord,
    ActivationScale,
    SequenceSimulation,
    SimulatorMethod,
)
from neuron_desk.method.activations import (
    MAX_NORMALIZED_ACTIVATION,
    UNKNOWN_ACTIVATION_STRING,
    calculate_max_activation,
    format_activation_records,
    format_sequences_for_simulation,
    normalize_activations,
)
from neuron_desk.method.default_backend import deferred_default_backend
from neuron_desk.method.explainers import EXPLANATION_PREFIX
from neuron_desk.method.few_shot import FewShotExampleSet
from neuron_desk.method.prompts import Prompt, PromptBuilder, PromptFormat, Role, chat_messages

VALID_ACTIVATION_TOKENS = frozenset(str(i) for i in range(MAX_NORMALIZED_ACTIVATION + 1))
MAX_MISSING_SHARE = 0.5
"""A simulation with more than this share of tokens unaligned is an error, not a result."""


# --- reading distributions -------------------------------------------------------------------


def digit_distribution(
    top_logprobs: Mapping[str, float], after_one: Mapping[str, float] | None = None
) -> dict[int, float] | None:
    """Normalized probabilities of the values 0..10 among a position's top logprobs.

    Tokens are compared after stripping whitespace, so " 5" counts as 5. If the tokenizer has
    no "10" token, the mass of "1" is split between 1 and 10 using `after_one`, the top
    logprobs of the token after a written "1" (its "0" share is the share of 10). Returns None
    when no digit has any probability.
    """
    mass: dict[int, float] = {}
    for token, logprob in top_logprobs.items():
        value = token.strip()
        if value in VALID_ACTIVATION_TOKENS and logprob is not None and math.isfinite(logprob):
            mass[int(value)] = mass.get(int(value), 0.0) + math.exp(logprob)
    if 1 in mass and 10 not in mass and after_one:
        p_zero = _share(after_one, "0")
        if p_zero > 0:
            mass[10] = mass[1] * p_zero
            mass[1] *= 1 - p_zero
    total = sum(mass.values())
    if total <= 0:
        return None
    return {value: mass[value] / total for value in sorted(mass)}


def _share(top_logprobs: Mapping[str, float], wanted: str) -> float:
    probabilities = {t: math.exp(lp) for t, lp in top_logprobs.items() if lp is not None}
    total = sum(probabilities.values())
    hit = sum(p for t, p in probabilities.items() if t.strip() == wanted)
    return hit / total if total > 0 else 0.0


def expected_value(distribution: Mapping[int, float]) -> float:
    """Sum of value x probability."""
    return float(sum(value * p for value, p in distribution.items()))


SOURCE_DISTRIBUTION = "distribution"
"""The value is the expected value of the model's distribution over the digits."""
SOURCE_WRITTEN = "written_digit"
"""The value is the digit the model wrote, taken with certainty (no readable distribution)."""
SOURCE_MISSING = "missing"
"""No value: the position is left out of the scores."""
SOURCE_FOLDED = "newline_folded_zero"
"""0.0, as the original scores a line whose token was merged with the newline before it
(only under the compatibility setting)."""


def count_sources(simulations: Sequence[SequenceSimulation]) -> dict[str, int]:
    """How many positions of `simulations` got their value from each source."""
    counts = {SOURCE_DISTRIBUTION: 0, SOURCE_WRITTEN: 0, SOURCE_MISSING: 0}
    if any(SOURCE_FOLDED in s.value_sources for s in simulations):
        counts[SOURCE_FOLDED] = 0
    for simulation in simulations:
        sources = simulation.value_sources or _inferred_sources(simulation)
        for source in sources:
            counts[source] = counts.get(source, 0) + 1
    return counts


def _inferred_sources(simulation: SequenceSimulation) -> list[str]:
    """Sources of a simulation stored before they were recorded (missing, else distribution)."""
    missing = set(simulation.missing_positions)
    return [
        SOURCE_MISSING if i in missing else SOURCE_DISTRIBUTION
        for i in range(len(simulation.tokens))
    ]


@dataclass
class _Positions:
    """Per-token predictions being collected for one sequence."""

    tokens: list[str]

    def __post_init__(self) -> None:
        n = len(self.tokens)
        self.expected: list[float] = [0.0] * n
        self.values: list[list[float]] = [[] for _ in range(n)]
        self.probabilities: list[list[float]] = [[] for _ in range(n)]
        self.sources: list[str] = [SOURCE_MISSING] * n
        self.missing: list[int] = []

    def set(
        self,
        index: int,
        distribution: Mapping[int, float] | None,
        source: str = SOURCE_DISTRIBUTION,
    ) -> None:
        if distribution is None:
            self.missing.append(index)
            self.sources[index] = SOURCE_MISSING
            return
        self.expected[index] = expected_value(distribution)
        self.values[index] = [float(v) for v in distribution]
        self.probabilities[index] = list(distribution.values())
        self.sources[index] = source

    def written(self, index: int, value: float) -> None:
        """The value the model wrote, taken with certainty."""
        self.expected[index] = float(value)
        self.values[index] = [float(value)]
        self.probabilities[index] = [1.0]
        self.sources[index] = SOURCE_WRITTEN

    def folded(self, index: int) -> None:
        """0.0 with no distribution: the original's value for a newline-folded token."""
        self.expected[index] = 0.0
        self.sources[index] = SOURCE_FOLDED

    def result(self, method: SimulatorMethod, model: str, what: str) -> SequenceSimulation:
        if self.tokens and len(self.missing) > MAX_MISSING_SHARE * len(self.tokens):
            raise SimulationParseError(
                f"{what}: no usable prediction for {len(self.missing)} of {len(self.tokens)} tokens"
            )
        return SequenceSimulation(
            tokens=list(self.tokens),
            expected_activations=self.expected,
            activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
            distribution_values=self.values,
            distribution_probabilities=self.probabilities,
            method=method.value,
            model=model,
            missing_positions=sorted(self.missing),
            value_sources=list(self.sources),
        )


# --- shared simulator plumbing ---------------------------------------------------------------


class NeuronSimulator(ABC):
    """Predicts a neuron's activations on a token sequence."""

    @abstractmethod
    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """The simulated activations on `tokens`."""


class _LLMSimulator(NeuronSimulator):
    method: SimulatorMethod

    def __init__(
        self,
        model_name: str,
        explanation: str,
        max_concurrent: int | None,
        few_shot_example_set: FewShotExampleSet,
        prompt_format: PromptFormat,
        cache: bool,
        backend: LLMBackend | None,
        top_logprobs: int,
    ) -> None:
        if not explanation.strip():
            raise MethodError("an explanation to simulate must not be empty")
        self.model_name = model_name
        self.explanation = explanation
        self.max_concurrent = max_concurrent
        self.few_shot_example_set = few_shot_example_set
        self.prompt_format = prompt_format
        self.cache = cache
        self.top_logprobs = top_logprobs
        self._backend = backend
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def backend(self) -> LLMBackend:
        """The LLM backend: the one passed, else the default profile's (built on first request)."""
        if self._backend is None:
            self._backend = deferred_default_backend()
        return self._backend

    async def _send(self, prompt: Prompt, **params: Any) -> JSONDict:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrent or 1_000_000)
        body: JSONDict = {"model": self.model_name, "temperature": 0, **params}
        async with self._semaphore:
            if isinstance(prompt, list):
                body["messages"] = chat_messages(prompt)
                return await self.backend.chat_completions(body)
            body["prompt"] = prompt
            return await self.backend.completions(body)


def _first_choice(response: JSONDict, n: int = 1) -> JSONDict:
    """The first choice, after checking the response has at most the `n` choices asked for."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendResponseError("the response has no choices")
    if len(choices) > n:
        raise BackendResponseError(
            f"the response has {len(choices)} choices for a request of {n}: not used"
        )
    choice: JSONDict = choices[0]
    return choice


def check_logprob(value: Any, where: str) -> float:
    """A logprob from a response: a number <= 0 (or -inf); anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BackendResponseError(f"{where}: a logprob is not a number ({value!r})")
    number = float(value)
    if math.isnan(number) or number > 1e-6:
        raise BackendResponseError(f"{where}: a logprob is not a log-probability ({value!r})")
    return number


def _check_top_map(entry: Any, where: str) -> None:
    if isinstance(entry, dict):
        for logprob in entry.values():
            check_logprob(logprob, where)


@runtime_checkable
class PrecheckedEntries(Protocol):
    """Top-logprob maps that can tell, without being decoded, that all their values are
    log-probabilities (the client's undecoded echo entries, `llm.answers.LazyEntries`)."""

    def values_are_logprobs(self) -> bool:
        """True only if every value of every map entry is a number <= 0; False: not known."""
        ...


def check_top_maps(entries: Sequence[Any], where: str) -> None:
    """`_check_top_map` for every entry (the top-logprob maps of an echo: ~20,000 values in a
    640 KB answer), with the same errors. Entries that show from their bytes that every value
    is a negative number pass at once; otherwise a quick test over all values at once (every
    one a float, none above 1e-6, their sum not NaN, i.e. no NaN) lets a valid answer through
    in a few C-level passes; anything neither lets through is checked value by value, which
    raises the error the careful check raises for the first bad value."""
    if isinstance(entries, PrecheckedEntries) and entries.values_are_logprobs():
        return
    maps = [entry for entry in entries if isinstance(entry, dict)]
    values = list(itertools.chain.from_iterable(map(dict.values, maps)))
    if not values:
        return
    if set(map(type, values)) == {float}:
        total = sum(values)
        if max(values) <= 1e-6 and total == total:
            return
    for entry in maps:
        _check_top_map(entry, where)


def _check_chat_entries(entries: Any, where: str, max_tokens: int | None) -> list[JSONDict]:
    """Chat logprobs entries, checked: a list of objects with finite logprobs, not too many."""
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BackendResponseError(f"{where}: the logprobs content is not a list of objects")
    if max_tokens is not None and len(entries) > max_tokens:
        raise BackendResponseError(
            f"{where}: logprobs for {len(entries)} tokens, but at most {max_tokens} were asked for"
        )
    for entry in entries:
        if "logprob" in entry and entry["logprob"] is not None:
            check_logprob(entry["logprob"], where)
        for alt in entry.get("top_logprobs") or []:
            if isinstance(alt, dict) and alt.get("logprob") is not None:
                check_logprob(alt["logprob"], where)
    return list(entries)


def _logprobs_of(choice: JSONDict) -> JSONDict:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        raise SimulationParseError(
            "the endpoint returned no logprobs; it cannot run this simulator"
        )
    return logprobs


def _chat_top_logprobs(entry: Any) -> dict[str, float]:
    """A chat logprobs entry's top_logprobs as {token: logprob}."""
    result: dict[str, float] = {}
    for alt in (entry or {}).get("top_logprobs") or []:
        token, logprob = alt.get("token"), alt.get("logprob")
        if isinstance(token, str) and isinstance(logprob, int | float):
            result[token] = max(result.get(token, -math.inf), float(logprob))
    return result


_ESCAPED_BYTES = re.compile(r"^(?:\\x[0-9a-fA-F]{2})+$")


def _decode_token(token: str) -> bytes:
    """A response token as bytes.

    OpenAI writes partial UTF-8 as "bytes:\\xe2\\x80"; DeepSeek as the bare escapes "\\xe2\\x80".
    """
    if not token.startswith("bytes:") and not _ESCAPED_BYTES.match(token):
        return token.encode("utf-8")
    raw = token[6:] if token.startswith("bytes:") else token
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw.startswith("\\x", i) and i + 4 <= len(raw):
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out.extend(raw[i].encode("utf-8"))
            i += 1
    return bytes(out)


def entry_bytes(entry: Mapping[str, Any]) -> bytes:
    """A chat logprobs entry's bytes: its `bytes` list where given, else from its token."""
    raw = entry.get("bytes")
    if isinstance(raw, list) and raw and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    return _decode_token(str(entry.get("token", "")))


def _encodes(text: str) -> bool:
    """Whether `text` has a UTF-8 form (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def token_char_offsets(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """The text spelled by response tokens, and the character offset where each one starts.

    A character split over several byte tokens is credited to the token that completes it.
    """
    text = "".join(tokens)
    if "\\x" not in text and "bytes:" not in text and _encodes(text):
        # No token is written as bytes, so each one is its own text: the offsets are the
        # running lengths (what the loop below finds, in one C-level pass).
        starts = list(itertools.accumulate(map(len, tokens), initial=0))
        starts.pop()
        return text, starts
    return token_char_offsets_by_bytes(tokens)


def token_char_offsets_by_bytes(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """`token_char_offsets` token by token, each decoded from its bytes (any token)."""
    text_parts: list[str] = []
    offsets: list[int] = []
    pending = b""
    length = 0
    for token in tokens:
        offsets.append(length)
        pending += _decode_token(token)
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        pending = b""
        text_parts.append(piece)
        length += len(piece)
    if pending:
        tail = pending.decode("utf-8", errors="replace")
        text_parts.append(tail)
    return "".join(text_parts), offsets


# --- 1. all at once, prompt logprobs (the paper's scorer) -----------------------------------


class ExplanationNeuronSimulator(_LLMSimulator):
    """All-at-once simulation from prompt logprobs at each "unknown" slot (the paper's)."""

    method = SimulatorMethod.PROMPT_LOGPROBS

    def __init__(
        self,
        model_name: str,
        explanation: str,
        max_concurrent: int | None = 10,
        few_shot_example_set: FewShotExampleSet = FewShotExampleSet.ORIGINAL,
        prompt_format: PromptFormat = PromptFormat.INSTRUCTION_FOLLOWING,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
        top_logprobs: int = 15,
        fold_newlines: bool = False,
    ) -> None:
        self.fold_newlines = fold_newlines
        """Score 0.0 where a newline folded into a token, as the original (compatibility)."""
        super().__init__(
            model_name,
            explanation,
            max_concurrent,
            few_shot_example_set,
            prompt_format,
            cache,
            backend,
            top_logprobs,
        )

    def make_simulation_prompt(self, tokens: Sequence[str]) -> Prompt:
        """The few-shot prompt with the target tokens as `token<TAB>unknown` lines."""
        builder = PromptBuilder()
        builder.add_message(
            Role.SYSTEM,
            "We're studying neurons in a neural network.\nEach neuron looks for some particular "
            "thing in a short document.\nLook at summary of what the neuron does, and try to "
            "predict how it will fire on each token.\n\nThe activation format is "
            'token<tab>activation, activations go from 0 to 10, "unknown" indicates an unknown '
            "activation. Most activations will be 0.\n",
        )
        examples = self.few_shot_example_set.get_examples()
        for i, example in enumerate(examples):
            builder.add_message(
                Role.USER,
                f"\n\nNeuron {i + 1}\nExplanation of neuron {i + 1} behavior: "
                f"{EXPLANATION_PREFIX} {example.explanation}",
            )
            formatted = format_activation_records(
                example.activation_records,
                calculate_max_activation(example.activation_records),
                start_indices=example.first_revealed_activation_indices,
            )
            builder.add_message(Role.ASSISTANT, f"\nActivations: {formatted}\n")
        n = len(examples) + 1
        builder.add_message(
            Role.USER,
            f"\n\nNeuron {n}\nExplanation of neuron {n} behavior: "
            f"{EXPLANATION_PREFIX} {self.explanation.strip()}",
        )
        builder.add_message(
            Role.ASSISTANT, f"\nActivations: {format_sequences_for_simulation([tokens])}"
        )
        return builder.build(self.prompt_format)

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """One echo request; read the digit distribution at every "unknown" slot."""
        if self.prompt_format == PromptFormat.HARMONY_V4:
            raise MethodError(
                "prompt-logprobs simulation needs a completions prompt (format 'none' or "
                "'instruction_following'); chat models can use the chat-generation or "
                "one-at-a-time simulator"
            )
        prompt = self.make_simulation_prompt(tokens)
        assert isinstance(prompt, str)
        # max_tokens=1, not 0: llama.cpp reads 0 as "unlimited". The extra token is ignored.
        response = await self._send(prompt, max_tokens=1, echo=True, logprobs=self.top_logprobs)
        return parse_prompt_logprobs_response(
            response, prompt, tokens, self.model_name, fold_newlines=self.fold_newlines
        )


def unknown_slot_offsets(prompt: str, tokens: Sequence[str]) -> list[int]:
    """Character offsets in `prompt` of each target token's "unknown" (prompt ends with them)."""
    section = format_sequences_for_simulation([tokens])
    if not prompt.endswith(section):
        raise SimulationParseError("the prompt does not end with the tokens to simulate")
    position = len(prompt) - len(section) + len("\n<start>\n")
    slots = []
    for token in tokens:
        slot = position + len(token) + 1
        slots.append(slot)
        position = slot + len(UNKNOWN_ACTIVATION_STRING) + 1
    return slots


def parse_prompt_logprobs_response(
    response: JSONDict,
    prompt: str,
    tokens: Sequence[str],
    model: str = "",
    *,
    fold_newlines: bool = False,
) -> SequenceSimulation:
    """Read the predictions at each "unknown" slot of an echoed prompt.

    Offsets come from the response tokens themselves, so it does not matter how the simulator's
    tokenizer splits the subject's tokens: only the token that starts exactly at an "unknown"
    slot is read. Slots where the tokenizer merged "unknown" with its tab are reported missing.
    With `fold_newlines` (the compatibility setting) a line whose token the simulator's
    tokenizer merged with the newline before it scores 0.0, as the original does.
    """
    logprobs = _logprobs_of(_first_choice(response))
    response_tokens = logprobs.get("tokens")
    top = logprobs.get("top_logprobs")
    if not isinstance(response_tokens, list) or not isinstance(top, list):
        raise SimulationParseError("the response has no prompt logprobs (was echo ignored?)")
    if len(top) != len(response_tokens):
        raise BackendResponseError(
            f"prompt-logprobs simulation: {len(top)} top_logprobs for {len(response_tokens)} tokens"
        )
    check_top_maps(top, "prompt-logprobs simulation")
    text, offsets = token_char_offsets(list(map(str, response_tokens)))
    base = 0
    if not text.startswith(prompt):
        base = text.find(prompt)  # some servers prepend a BOS string
        if base < 0:
            raise SimulationParseError(
                "the echoed prompt differs from the prompt sent; the endpoint did not echo it"
            )
    # Each offset to the first token starting there (later ones are overwritten by earlier).
    start_of = dict(zip(reversed(offsets), range(len(offsets) - 1, -1, -1), strict=True))
    positions = _Positions(list(tokens))
    for i, slot in enumerate(unknown_slot_offsets(prompt, tokens)):
        if fold_newlines and _newline_folded(offsets, start_of, base + slot, len(tokens[i])):
            positions.folded(i)
            continue
        k = start_of.get(base + slot)
        entry = top[k] if k is not None and k < len(top) else None
        if k is None or not isinstance(entry, dict):
            positions.set(i, None)
            continue
        positions.set(i, digit_distribution(entry))
    return positions.result(ExplanationNeuronSimulator.method, model, "prompt-logprobs simulation")


def _newline_folded(
    offsets: Sequence[int], start_of: Mapping[int, int], slot: int, token_length: int
) -> bool:
    """Whether the response token before a line's tab also holds the newline before the line."""
    tab = start_of.get(slot - 1)
    if tab is None or tab == 0:
        return False
    line_start = slot - 1 - token_length
    return offsets[tab - 1] < line_start


# --- 2. one token at a time ------------------------------------------------------------------


class ExplanationTokenByTokenSimulator(_LLMSimulator):
    """One request per token; the prediction is the next token's digit distribution."""

    method = SimulatorMethod.ONE_AT_A_TIME

    def __init__(
        self,
        model_name: str,
        explanation: str,
        max_concurrent: int | None = 10,
        few_shot_example_set: FewShotExampleSet = FewShotExampleSet.NEWER,
        prompt_format: PromptFormat = PromptFormat.INSTRUCTION_FOLLOWING,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
        top_logprobs: int = 15,
        max_next_tokens: int = 2,
    ) -> None:
        if few_shot_example_set == FewShotExampleSet.ORIGINAL:
            raise ValueError("This simulator doesn't support the ORIGINAL few-shot example set.")
        super().__init__(
            model_name,
            explanation,
            max_concurrent,
            few_shot_example_set,
            prompt_format,
            cache,
            backend,
            top_logprobs,
        )
        if max_next_tokens not in (1, 2):
            raise ValueError("max_next_tokens is 1 (the original's) or 2 (reads a split 10)")
        self.max_next_tokens = max_next_tokens
        self.failures: list[str] = []
        """Requests that failed for good, each making one position missing."""

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """Ask for every token's activation separately (concurrently, within the limit).

        A request that fails for good (its retries spent) or whose answer is unusable makes its
        position missing instead of discarding the sequence; the error is kept in `failures`.
        """
        distributions = await asyncio.gather(
            *(self._simulate_token_or_missing(tokens, index) for index in range(len(tokens)))
        )
        positions = _Positions(list(tokens))
        for index, distribution in enumerate(distributions):
            positions.set(index, distribution)
        return positions.result(self.method, self.model_name, "one-at-a-time simulation")

    async def _simulate_token_or_missing(
        self, tokens: Sequence[str], index: int
    ) -> dict[int, float] | None:
        try:
            return await self._simulate_token(tokens, index)
        except (BackendError, SimulationParseError) as exc:
            if not _lost_request(exc):
                raise
            self.failures.append(f"token {index}: {exc}")
            return None

    async def _simulate_token(self, tokens: Sequence[str], index: int) -> dict[int, float] | None:
        prompt = self.make_single_token_simulation_prompt(tokens, self.explanation, index)
        # Two tokens, so that a "1" is followed by the digit that tells 1 from 10 (the original
        # asked for one: `max_next_tokens=1` under the compatibility setting).
        n = self.max_next_tokens
        if self.prompt_format == PromptFormat.HARMONY_V4:
            response = await self._send(
                prompt, max_tokens=n, logprobs=True, top_logprobs=min(self.top_logprobs, 20)
            )
            return parse_chat_next_token(response, max_tokens=n)
        response = await self._send(prompt, max_tokens=n, logprobs=self.top_logprobs)
        return parse_completion_next_token(response, max_tokens=n)

    def _add_single_token_subprompt(
        self,
        builder: PromptBuilder,
        record: ActivationRecord,
        neuron_index: int,
        explanation: str,
        token_index_to_score: int,
        end_of_prompt: bool,
    ) -> None:
        shown = record.tokens[: token_index_to_score + 1]
        builder.add_message(
            Role.USER,
            f"\nNeuron {neuron_index}\nExplanation of neuron {neuron_index} behavior: "
            f"{EXPLANATION_PREFIX} {explanation.strip()}\nText:\n{''.join(shown)}\n\n"
            f"Last token in the text:\n{shown[-1]}\n\nLast token activation, considering the "
            "token in the context in which it appeared in the text:\n",
        )
        if not end_of_prompt:
            normalized = normalize_activations(
                record.activations[: token_index_to_score + 1], calculate_max_activation([record])
            )
            builder.add_message(Role.ASSISTANT, f"{normalized[-1]}\n\n")

    def make_single_token_simulation_prompt(
        self, tokens: Sequence[str], explanation: str, token_index_to_score: int
    ) -> Prompt:
        """The few-shot prompt asking for the activation on `tokens[token_index_to_score]`."""
        if not explanation:
            raise MethodError("an explanation to simulate must not be empty")
        builder = PromptBuilder()
        builder.add_message(
            Role.SYSTEM,
            "We're studying neurons in a neural network. Each neuron looks for some particular "
            "thing in a short document. Look at  an explanation of what the neuron does, and try "
            "to predict its activations on a particular token.\n\nThe activation format is "
            "token<tab>activation, and activations range from 0 to 10. Most activations will be "
            "0.\n\n",
        )
        examples = self.few_shot_example_set.get_examples()
        for i, example in enumerate(examples):
            builder.add_message(
                Role.USER,
                f"Neuron {i + 1}\nExplanation of neuron {i + 1} behavior: {EXPLANATION_PREFIX} "
                f"{example.explanation}\n",
            )
            formatted = format_activation_records(
                example.activation_records, calculate_max_activation(example.activation_records)
            )
            builder.add_message(Role.ASSISTANT, f"Activations: {formatted}\n\n")
        builder.add_message(
            Role.SYSTEM,
            "Now, we're going predict the activation of a new neuron on a single token, "
            "following the same rules as the examples above. Activations still range from 0 to 10.",
        )
        single = self.few_shot_example_set.get_single_token_prediction_example()
        assert single.token_index_to_score is not None
        self._add_single_token_subprompt(
            builder,
            single.activation_records[0],
            len(examples) + 1,
            explanation,
            single.token_index_to_score,
            end_of_prompt=False,
        )
        target = ActivationRecord(
            tokens=list(tokens[: token_index_to_score + 1]), activations=[0.0] * len(tokens)
        )
        self._add_single_token_subprompt(
            builder,
            target,
            len(examples) + 2,
            explanation,
            token_index_to_score,
            end_of_prompt=True,
        )
        return builder.build(self.prompt_format, allow_extra_system_messages=True)


def _lost_request(exc: Exception) -> bool:
    """Whether a failure loses one request only (retries spent, an unusable answer), rather
    than saying the run can't work at all (a bad key, an unknown model, a closed client)."""
    if isinstance(exc, BackendHTTPError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, BackendUnavailable | BackendResponseError | SimulationParseError)


def parse_chat_next_token(
    response: JSONDict, max_tokens: int | None = None
) -> dict[int, float] | None:
    """Digit distribution of the first generated token of a chat response with top_logprobs."""
    raw = _logprobs_of(_first_choice(response)).get("content")
    content = _check_chat_entries(raw, "one-at-a-time simulation", max_tokens)
    if not content:
        raise SimulationParseError("the chat response has no per-token logprobs")
    after_one = None
    if len(content) > 1 and str(content[0].get("token", "")).strip() == "1":
        after_one = _chat_top_logprobs(content[1])
    return digit_distribution(_chat_top_logprobs(content[0]), after_one)


def parse_completion_next_token(
    response: JSONDict, max_tokens: int | None = None
) -> dict[int, float] | None:
    """Digit distribution of the first generated token of a completions response."""
    logprobs = _logprobs_of(_first_choice(response))
    top = logprobs.get("top_logprobs")
    generated = logprobs.get("tokens") or []
    if not isinstance(top, list) or not top or not isinstance(top[0], dict):
        raise SimulationParseError("the completion has no top logprobs")
    where = "one-at-a-time simulation"
    if isinstance(generated, list) and generated and len(generated) != len(top):
        raise BackendResponseError(f"{where}: {len(top)} top_logprobs for {len(generated)} tokens")
    if max_tokens is not None and len(top) > max_tokens:
        raise BackendResponseError(
            f"{where}: logprobs for {len(top)} tokens, but at most {max_tokens} were asked for"
        )
    check_top_maps(top, where)
    after_one = None
    if len(top) > 1 and generated and str(generated[0]).strip() == "1" and isinstance(top[1], dict):
        after_one = top[1]
    return digit_distribution(top[0], after_one)


# --- 3. all at once, chat generation ---------------------------------------------------------

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_token(token: str) -> str:
    """A token as one line: backslash, tab, newline and CR written as \\\\, \\t, \\n, \\r."""
    return "".join(_ESCAPES.get(c, c) for c in token)


_LINE = re.compile(r"^(?P<token>.*?)(?:\t| +\t?)\s*(?P<value>\d{1,2})\s*$")


class ChatGenerationSimulator(_LLMSimulator):
    """All-at-once simulation by a chat model that writes a number on every token's line."""

    method = SimulatorMethod.CHAT_GENERATION

    def __init__(
        self,
        model_name: str,
        explanation: str,
        max_concurrent: int | None = 10,
        few_shot_example_set: FewShotExampleSet = FewShotExampleSet.ORIGINAL,
        prompt_format: PromptFormat = PromptFormat.HARMONY_V4,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
        top_logprobs: int = 20,
        written_digits: bool = False,
    ) -> None:
        if prompt_format != PromptFormat.HARMONY_V4:
            raise ValueError("chat-generation simulation uses chat messages (harmony_v4)")
        self.written_digits = written_digits
        """Ask for no logprobs and take each written digit with certainty (endpoints without
        logprobs); recorded as its own method, `all_at_once_chat_generation_written_digits`."""
        if written_digits:
            self.method = SimulatorMethod.CHAT_WRITTEN_DIGITS
        super().__init__(
            model_name,
            explanation,
            max_concurrent,
            few_shot_example_set,
            prompt_format,
            cache,
            backend,
            top_logprobs,
        )

    system_prompt = (
        "We're studying neurons in a neural network. Each neuron looks for some particular thing "
        "in a short document. Look at an explanation of what the neuron does, and try to predict "
        "how it will fire on each token.\n\n"
        "The tokens of a text come one per line between <start> and <end>, as "
        "token<tab>unknown. Answer with the same lines between <start> and <end>, in the same "
        'order, with each "unknown" replaced by the activation on that token: an integer from 0 '
        "to 10. Most activations will be 0. A tab, newline or backslash inside a token is "
        "written as \\t, \\n or \\\\. Answer with the lines only."
    )

    def make_simulation_prompt(self, tokens: Sequence[str]) -> Prompt:
        """Chat messages: few-shot records answered with their activations, then the target."""
        builder = PromptBuilder()
        builder.add_message(Role.SYSTEM, self.system_prompt)
        neuron = 0
        for example in self.few_shot_example_set.get_examples():
            max_activation = calculate_max_activation(example.activation_records)
            for record in example.activation_records:
                neuron += 1
                builder.add_message(
                    Role.USER, self._question(neuron, example.explanation, record.tokens)
                )
                values = normalize_activations(record.activations, max_activation)
                lines = [
                    f"{escape_token(t)}\t{v}" for t, v in zip(record.tokens, values, strict=True)
                ]
                builder.add_message(Role.ASSISTANT, "<start>\n" + "\n".join(lines) + "\n<end>")
        builder.add_message(Role.USER, self._question(neuron + 1, self.explanation.strip(), tokens))
        return builder.build(PromptFormat.HARMONY_V4)

    @staticmethod
    def _question(neuron: int, explanation: str, tokens: Sequence[str]) -> str:
        lines = "\n".join(f"{escape_token(t)}\t{UNKNOWN_ACTIVATION_STRING}" for t in tokens)
        return (
            f"Neuron {neuron}\nExplanation of neuron {neuron} behavior: {EXPLANATION_PREFIX} "
            f"{explanation}\n<start>\n{lines}\n<end>"
        )

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """One chat request; align the answer's lines to the tokens."""
        prompt = self.make_simulation_prompt(tokens)
        max_tokens = 16 * len(tokens) + 32
        if self.written_digits:
            response = await self._send(prompt, max_tokens=max_tokens)
        else:
            response = await self._send(
                prompt,
                max_tokens=max_tokens,
                logprobs=True,
                top_logprobs=min(self.top_logprobs, 20),
            )
        return parse_chat_generation_response(
            response,
            tokens,
            self.model_name,
            written_only=self.written_digits,
            max_tokens=max_tokens,
        )


Span = tuple[int, int]


def _match_piece(content: str, cursor: int, piece: str) -> int | None:
    """Where `piece` ends if it is spelled at `cursor`; U+FFFD matches any non-ASCII run."""
    if "\ufffd" not in piece:
        return cursor + len(piece) if content.startswith(piece, cursor) else None
    parts = re.sub("\ufffd+", "\ufffd", piece).split("\ufffd")
    pattern = "[^\\x00-\\x7f]*".join(re.escape(part) for part in parts)
    match = re.compile(pattern).match(content, cursor)
    return match.end() if match else None


def _after_newline(content: str, count: int) -> int | None:
    """The offset just after the `count`-th newline of `content` (None if it has fewer)."""
    position = -1
    for _ in range(count):
        position = content.find("\n", position + 1)
        if position < 0:
            return None
    return position + 1


def align_chat_entries(content: str, entries: Sequence[Mapping[str, Any]]) -> list[Span | None]:
    """The span of `content` each logprobs entry spells (None where it can't be placed).

    Entries are decoded from their `bytes` where given, else from their token (OpenAI's
    "bytes:\\x.." and DeepSeek's bare "\\x.." escapes included); a character split over several
    entries is credited to the entries that spell it together. A token spelled with U+FFFD (a
    partial character, as vLLM and Ollama write it) matches any run of non-ASCII characters.
    After an entry that does not match, alignment resumes at the next line boundary (newlines
    inside tokens are escaped, so every newline of the answer ends a line).
    """
    spans: list[Span | None] = []
    cursor = 0
    group: list[int] = []  # entries whose bytes do not yet decode
    pending = b""
    lost = False
    lines_done = 0  # newlines spelled so far (by the content while aligned, by entries when lost)
    for entry in entries:
        group.append(len(spans))
        spans.append(None)
        pending += entry_bytes(entry)
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data" and len(pending) < 8:
                continue
            piece = pending.decode("utf-8", errors="replace")
        members, group, pending = group, [], b""
        end = None if lost else _match_piece(content, cursor, piece)
        if end is not None:
            for index in members:
                spans[index] = (cursor, end)
            lines_done += content.count("\n", cursor, end)
            cursor = end
            continue
        lost = True
        lines_done += piece.count("\n")
        if "\n" not in piece:
            continue
        resume = _after_newline(content, lines_done)
        tail = piece[piece.rindex("\n") + 1 :]
        if resume is not None and "\ufffd" not in tail and content.startswith(tail, resume):
            cursor, lost = resume + len(tail), False
    return spans


def _entry_at(spans: Sequence[Span | None], content: str, offset: int) -> int | None:
    """The entry whose span holds `offset` with only whitespace of its own before it."""
    for index, span in enumerate(spans):
        if span is not None and span[0] <= offset < span[1]:
            return index if not content[span[0] : offset].strip() else None
    return None


def _answer_lines(content: str) -> list[tuple[str, int, str]]:
    """(token part, offset of the number, number) of each line between <start> and <end>."""
    raw_lines = content.split("\n")
    starts = []
    position = 0
    for raw in raw_lines:
        starts.append(position)
        position += len(raw) + 1
    first = next((i + 1 for i, raw in enumerate(raw_lines) if raw.strip() == "<start>"), 0)
    last = next(
        (i for i in range(first, len(raw_lines)) if raw_lines[i].strip() == "<end>"),
        len(raw_lines),
    )
    lines = []
    for index in range(first, last):
        match = _LINE.match(raw_lines[index])
        if match:
            lines.append((match["token"], starts[index] + match.start("value"), match["value"]))
    return lines


def parse_chat_generation_response(
    response: JSONDict,
    tokens: Sequence[str],
    model: str = "",
    *,
    written_only: bool = False,
    max_tokens: int | None = None,
) -> SequenceSimulation:
    """Align the lines of a chat answer to `tokens` and read each number's distribution.

    Each target token is looked for in the next few lines (the model may skip or garble a
    line); a token with no matching line is reported missing. The distribution comes from the
    logprobs entry that spells the number (with the second digit when "10" comes as "1","0"),
    found by its place in the answer (`align_chat_entries`); only where no entry can be read
    there is the written number used, with certainty. Each position records its source.
    """
    where = "chat-generation simulation"
    choice = _first_choice(response)
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise BackendResponseError("the chat response has no message content")
    entries: list[JSONDict] = []
    if not written_only:
        logprobs = choice.get("logprobs")
        raw = logprobs.get("content") if isinstance(logprobs, dict) else None
        entries = _check_chat_entries(raw, where, max_tokens)
    spans = align_chat_entries(content, entries)
    lines = _answer_lines(content)

    positions = _Positions(list(tokens))
    next_line = 0
    for i, token in enumerate(tokens):
        found = _find_line(lines, next_line, escape_token(token))
        if found is None:
            positions.set(i, None)
            continue
        next_line = found + 1
        _, value_offset, written = lines[found]
        if int(written) > MAX_NORMALIZED_ACTIVATION:
            positions.set(i, None)
            continue
        distribution = None
        k = _entry_at(spans, content, value_offset)
        if k is not None:
            first = entry_bytes(entries[k]).decode("utf-8", "replace").strip()
            if first.startswith(written[0]):
                after = _chat_top_logprobs(entries[k + 1]) if k + 1 < len(entries) else None
                two_step = first == "1" and len(written) == 2
                distribution = digit_distribution(
                    _chat_top_logprobs(entries[k]), after if two_step or first == "1" else None
                )
        if distribution is not None:
            positions.set(i, distribution)
        else:
            positions.written(i, int(written))
    method = SimulatorMethod.CHAT_WRITTEN_DIGITS if written_only else ChatGenerationSimulator.method
    return positions.result(method, model, where)


def _find_line(
    lines: list[tuple[str, int, str]], start: int, token: str, lookahead: int = 4
) -> int | None:
    wanted = token.strip()
    for j in range(start, min(start + lookahead, len(lines))):
        written = lines[j][0]
        if written == token or written.strip() == wanted:
            return j
    return None


# --- 4. without logprobs: the original's JSON simulator --------------------------------------


def _logprob_free_json(explanation: str, record: ActivationRecord, with_activations: bool) -> str:
    """One record as the original's JSON message (json.dumps defaults: the protocol)."""
    return json.dumps(
        {
            "to_find": explanation,
            "document": "".join(record.tokens),
            "activations": [
                {"token": token, "activation": record.activations[i] if with_activations else None}
                for i, token in enumerate(record.tokens)
            ],
        }
    )


def parse_logprob_free_response(
    response: JSONDict, tokens: Sequence[str], model: str = ""
) -> SequenceSimulation:
    """Read the JSON answer of `LogprobFreeExplanationTokenSimulator`.

    Where the original scores 0 for an unreadable answer or value, this reports the positions
    missing (and an answer of the wrong length as an error): nothing is silently scored 0.
    """
    where = "logprob-free simulation"
    choice = _first_choice(response)
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise BackendResponseError("the chat response has no message content")
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        raise SimulationParseError(f"{where}: the answer is not JSON") from None
    activations = answer.get("activations") if isinstance(answer, dict) else None
    if not isinstance(activations, list) or len(activations) != len(tokens):
        raise SimulationParseError(
            f"{where}: the answer does not list one activation for each of the {len(tokens)} tokens"
        )
    positions = _Positions(list(tokens))
    for i, item in enumerate(activations):
        value = item.get("activation") if isinstance(item, dict) and "token" in item else None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and 0 <= value <= MAX_NORMALIZED_ACTIVATION
        ):
            positions.written(i, float(value))
        else:
            positions.set(i, None)
    return positions.result(LogprobFreeExplanationTokenSimulator.method, model, where)


class LogprobFreeExplanationTokenSimulator(_LLMSimulator):
    """The original's simulator without logprobs: the model repeats the tokens as JSON with
    each activation filled in (temperature 0); each value is the sampled number."""

    method = SimulatorMethod.LOGPROB_FREE

    def __init__(
        self,
        model_name: str,
        explanation: str,
        max_concurrent: int | None = 10,
        few_shot_example_set: FewShotExampleSet = FewShotExampleSet.NEWER,
        prompt_format: PromptFormat = PromptFormat.HARMONY_V4,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
    ) -> None:
        if few_shot_example_set == FewShotExampleSet.ORIGINAL:
            raise ValueError("This simulator doesn't support the ORIGINAL few-shot example set.")
        if prompt_format != PromptFormat.HARMONY_V4:
            raise ValueError("This simulator only supports the HARMONY_V4 prompt format.")
        super().__init__(
            model_name,
            explanation,
            max_concurrent,
            few_shot_example_set,
            prompt_format,
            cache,
            backend,
            0,
        )

    def make_simulation_prompt(self, tokens: Sequence[str], explanation: str) -> Prompt:
        """The original's few-shot JSON prompt (one record per example neuron)."""
        if not explanation:
            raise MethodError("an explanation to simulate must not be empty")
        builder = PromptBuilder()
        builder.add_message(Role.SYSTEM, LOGPROB_FREE_SYSTEM_PROMPT)
        for example in self.few_shot_example_set.get_examples():
            record = example.activation_records[0]
            builder.add_message(
                Role.USER, _logprob_free_json(example.explanation, record, with_activations=False)
            )
            builder.add_message(
                Role.ASSISTANT,
                _logprob_free_json(example.explanation, record, with_activations=True),
            )
        target = ActivationRecord(tokens=list(tokens), activations=[])
        builder.add_message(Role.USER, _logprob_free_json(explanation, target, False))
        return builder.build(self.prompt_format, allow_extra_system_messages=True)

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """One chat request at temperature 0 (max_tokens 2000, as the original)."""
        prompt = self.make_simulation_prompt(tokens, self.explanation)
        response = await self._send(prompt, max_tokens=2000)
        return parse_logprob_free_response(response, tokens, self.model_name)


LOGPROB_FREE_SYSTEM_PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for certain things in a short "
    "document. Your task is to read the explanation of what the neuron does, and predict the "
    "neuron's activations for each token in the document.\n\nFor each document, you will see the "
    "full text of the document, then the tokens in the document with the activation left blank. "
    "You will print, in valid json, the exact same tokens verbatim, but with the activation "
    "values filled in according to the explanation. Pay special attention to the explanation's "
    "description of the context and order of tokens or words.\n\nFill out the activation values "
    'from 0 to 10. Please think carefully.";\n'
)
"""The original's system message, byte for byte (its stray `";` included)."""
