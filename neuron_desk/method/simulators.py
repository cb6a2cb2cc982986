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
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neuron_desk.core.backend import JSONDict, LLMBackend
from neuron_desk.core.errors import BackendResponseError, MethodError, SimulationParseError
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


@dataclass
class _Positions:
    """Per-token predictions being collected for one sequence."""

    tokens: list[str]

    def __post_init__(self) -> None:
        n = len(self.tokens)
        self.expected: list[float] = [0.0] * n
        self.values: list[list[float]] = [[] for _ in range(n)]
        self.probabilities: list[list[float]] = [[] for _ in range(n)]
        self.missing: list[int] = []

    def set(self, index: int, distribution: Mapping[int, float] | None) -> None:
        if distribution is None:
            self.missing.append(index)
            return
        self.expected[index] = expected_value(distribution)
        self.values[index] = [float(v) for v in distribution]
        self.probabilities[index] = list(distribution.values())

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


def _first_choice(response: JSONDict) -> JSONDict:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendResponseError("the response has no choices")
    choice: JSONDict = choices[0]
    return choice


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


def _decode_token(token: str) -> bytes:
    """A response token as bytes; OpenAI writes partial UTF-8 as "bytes:\\xe2\\x80"."""
    if not token.startswith("bytes:"):
        return token.encode("utf-8")
    raw = token[6:]
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


def token_char_offsets(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """The text spelled by response tokens, and the character offset where each one starts.

    A character split over several byte tokens is credited to the token that completes it.
    """
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
    ) -> None:
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
        return parse_prompt_logprobs_response(response, prompt, tokens, self.model_name)


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
    response: JSONDict, prompt: str, tokens: Sequence[str], model: str = ""
) -> SequenceSimulation:
    """Read the predictions at each "unknown" slot of an echoed prompt.

    Offsets come from the response tokens themselves, so it does not matter how the simulator's
    tokenizer splits the subject's tokens: only the token that starts exactly at an "unknown"
    slot is read. Slots where the tokenizer merged "unknown" with its tab are reported missing.
    """
    logprobs = _logprobs_of(_first_choice(response))
    response_tokens = logprobs.get("tokens")
    top = logprobs.get("top_logprobs")
    if not isinstance(response_tokens, list) or not isinstance(top, list):
        raise SimulationParseError("the response has no prompt logprobs (was echo ignored?)")
    text, offsets = token_char_offsets([str(t) for t in response_tokens])
    base = 0
    if not text.startswith(prompt):
        base = text.find(prompt)  # some servers prepend a BOS string
        if base < 0:
            raise SimulationParseError(
                "the echoed prompt differs from the prompt sent; the endpoint did not echo it"
            )
    start_of = {offset: index for index, offset in reversed(list(enumerate(offsets)))}
    positions = _Positions(list(tokens))
    for i, slot in enumerate(unknown_slot_offsets(prompt, tokens)):
        k = start_of.get(base + slot)
        entry = top[k] if k is not None and k < len(top) else None
        if k is None or not isinstance(entry, dict):
            positions.set(i, None)
            continue
        positions.set(i, digit_distribution(entry))
    return positions.result(ExplanationNeuronSimulator.method, model, "prompt-logprobs simulation")


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

    async def simulate(self, tokens: Sequence[str]) -> SequenceSimulation:
        """Ask for every token's activation separately (concurrently, within the limit)."""
        distributions = await asyncio.gather(
            *(self._simulate_token(tokens, index) for index in range(len(tokens)))
        )
        positions = _Positions(list(tokens))
        for index, distribution in enumerate(distributions):
            positions.set(index, distribution)
        return positions.result(self.method, self.model_name, "one-at-a-time simulation")

    async def _simulate_token(self, tokens: Sequence[str], index: int) -> dict[int, float] | None:
        prompt = self.make_single_token_simulation_prompt(tokens, self.explanation, index)
        # Two tokens, so that a "1" is followed by the digit that tells 1 from 10.
        if self.prompt_format == PromptFormat.HARMONY_V4:
            response = await self._send(
                prompt, max_tokens=2, logprobs=True, top_logprobs=min(self.top_logprobs, 20)
            )
            return parse_chat_next_token(response)
        response = await self._send(prompt, max_tokens=2, logprobs=self.top_logprobs)
        return parse_completion_next_token(response)

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


def parse_chat_next_token(response: JSONDict) -> dict[int, float] | None:
    """Digit distribution of the first generated token of a chat response with top_logprobs."""
    content = _logprobs_of(_first_choice(response)).get("content")
    if not isinstance(content, list) or not content:
        raise SimulationParseError("the chat response has no per-token logprobs")
    after_one = None
    if len(content) > 1 and str(content[0].get("token", "")).strip() == "1":
        after_one = _chat_top_logprobs(content[1])
    return digit_distribution(_chat_top_logprobs(content[0]), after_one)


def parse_completion_next_token(response: JSONDict) -> dict[int, float] | None:
    """Digit distribution of the first generated token of a completions response."""
    logprobs = _logprobs_of(_first_choice(response))
    top = logprobs.get("top_logprobs")
    generated = logprobs.get("tokens") or []
    if not isinstance(top, list) or not top or not isinstance(top[0], dict):
        raise SimulationParseError("the completion has no top logprobs")
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
    ) -> None:
        if prompt_format != PromptFormat.HARMONY_V4:
            raise ValueError("chat-generation simulation uses chat messages (harmony_v4)")
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
        response = await self._send(
            prompt,
            max_tokens=16 * len(tokens) + 32,
            logprobs=True,
            top_logprobs=min(self.top_logprobs, 20),
        )
        return parse_chat_generation_response(response, tokens, self.model_name)


def parse_chat_generation_response(
    response: JSONDict, tokens: Sequence[str], model: str = ""
) -> SequenceSimulation:
    """Align the lines of a chat answer to `tokens` and read each number's distribution.

    Each target token is looked for in the next few lines (the model may skip or garble a
    line); a token with no matching line is reported missing. Where the response has
    per-token logprobs, the distribution at the number's first token is used (with the
    second digit when "10" comes as "1","0"); otherwise the written number, with certainty.
    """
    choice = _first_choice(response)
    content = (choice.get("message") or {}).get("content")
    if not isinstance(content, str):
        raise BackendResponseError("the chat response has no message content")
    entries = ((choice.get("logprobs") or {}).get("content")) or []
    spelled, offsets = token_char_offsets([str(e.get("token", "")) for e in entries])
    by_offset = spelled == content
    start_of = {offset: index for index, offset in reversed(list(enumerate(offsets)))}

    body_start = content.find("<start>")
    body_start = 0 if body_start < 0 else body_start + len("<start>")
    body_end = content.find("<end>", body_start)
    body_end = len(content) if body_end < 0 else body_end
    lines: list[tuple[str, int, str]] = []  # (token part, offset of the number, number)
    offset = body_start
    for raw in content[body_start:body_end].split("\n"):
        match = _LINE.match(raw)
        if match:
            lines.append((match["token"], offset + match.start("value"), match["value"]))
        offset += len(raw) + 1

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
        k = start_of.get(value_offset) if by_offset else None
        if k is not None:
            after = _chat_top_logprobs(entries[k + 1]) if k + 1 < len(entries) else None
            first = str(entries[k].get("token", "")).strip()
            distribution = digit_distribution(
                _chat_top_logprobs(entries[k]), after if first == "1" else None
            )
        positions.set(i, distribution or {int(written): 1.0})
    return positions.result(ChatGenerationSimulator.method, model, "chat-generation simulation")


def _find_line(
    lines: list[tuple[str, int, str]], start: int, token: str, lookahead: int = 4
) -> int | None:
    wanted = token.strip()
    for j in range(start, min(start + lookahead, len(lines))):
        written = lines[j][0]
        if written == token or written.strip() == wanted:
            return j
    return None
