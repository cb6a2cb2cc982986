"""Explainers: prompt an LLM with a neuron's activations (or top tokens) for an explanation.

Prompts are byte-identical to neuron-explainer's: published explanations were generated with
them. The LLM is reached through an `LLMBackend`, passed in or resolved on first use, so an
explainer can be built (and its prompts inspected) with no network and no API key.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from typing import Any

from neuron_desk.core.backend import JSONDict, LLMBackend
from neuron_desk.core.errors import BackendResponseError, PromptTooLongError
from neuron_desk.core.model import ActivationRecord
from neuron_desk.method.activations import (
    calculate_max_activation,
    format_activation_records,
    non_zero_activation_proportion,
)
from neuron_desk.method.default_backend import deferred_default_backend
from neuron_desk.method.few_shot import FewShotExampleSet, TokenSpaceFewShotExampleSet
from neuron_desk.method.prompts import Prompt, PromptBuilder, PromptFormat, Role, chat_messages

logger = logging.getLogger(__name__)

EXPLANATION_PREFIX = "the main thing this neuron does is find"


class ContextSize(int, Enum):
    """Context windows of the models the original prompts were tuned for."""

    TWO_K = 2049
    FOUR_K = 4097

    @classmethod
    def from_int(cls, i: int) -> ContextSize:
        """The size whose value is `i`."""
        for size in cls:
            if size.value == i:
                return size
        raise ValueError(f"{i} is not a valid ContextSize")


def _split_numbered_list(text: str) -> list[str]:
    """Split "1. a\n2. b" into its items, leading whitespace stripped."""
    return [line.lstrip() for line in re.split(r"\n\d+\.", text)]


def _remove_final_period(text: str) -> str:
    if text.endswith("."):
        return text[:-1]
    if text.endswith(". "):
        return text[:-2]
    return text


def _strip_prefix_items(completions: list[str]) -> list[str]:
    explanations = []
    for completion in completions:
        for item in _split_numbered_list(completion):
            if item.startswith(EXPLANATION_PREFIX):
                item = item[len(EXPLANATION_PREFIX) :]
            explanations.append(item.strip())
    return explanations


def completion_texts(response: JSONDict, chat: bool) -> list[str]:
    """The text of every choice of a completions or chat completions response."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BackendResponseError("the response has no choices")
    texts = []
    for choice in choices:
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        if not isinstance(text, str):
            raise BackendResponseError("a choice in the response has no text")
        texts.append(text)
    return texts


class NeuronExplainer(ABC):
    """Builds an explanation prompt from subclass-specific inputs and samples completions."""

    def __init__(
        self,
        model_name: str,
        prompt_format: PromptFormat = PromptFormat.HARMONY_V4,
        context_size: ContextSize | int = ContextSize.FOUR_K,
        max_concurrent: int | None = 10,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
    ) -> None:
        self.model_name = model_name
        self.prompt_format = prompt_format
        self.context_size = context_size
        self.max_concurrent = max_concurrent
        self.cache = cache
        self._backend = backend

    @property
    def backend(self) -> LLMBackend:
        """The LLM backend: the one passed, else the default profile's (built on first request)."""
        if self._backend is None:
            self._backend = deferred_default_backend()
        return self._backend

    async def generate_explanations(
        self,
        *,
        num_samples: int = 5,
        max_tokens: int = 60,
        temperature: float = 1.0,
        top_p: float = 1.0,
        **prompt_kwargs: Any,
    ) -> list[Any]:
        """Sample `num_samples` completions of the explanation prompt and postprocess them."""
        prompt = self.make_explanation_prompt(max_tokens_for_completion=max_tokens, **prompt_kwargs)
        body: JSONDict = {
            "model": self.model_name,
            "n": num_samples,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        chat = self.prompt_format == PromptFormat.HARMONY_V4
        if chat:
            assert isinstance(prompt, list)
            body["messages"] = chat_messages(prompt)
            response = await self.backend.chat_completions(body)
        else:
            assert isinstance(prompt, str)
            body["prompt"] = prompt
            response = await self.backend.completions(body)
        return self.postprocess_explanations(completion_texts(response, chat), prompt_kwargs)

    @abstractmethod
    def make_explanation_prompt(self, **kwargs: Any) -> Prompt:
        """The prompt asking for an explanation: a string or a list of chat messages."""

    def postprocess_explanations(
        self, completions: list[str], prompt_kwargs: dict[str, Any]
    ) -> list[Any]:
        """Turn completions into explanations (no-op by default)."""
        return completions

    def _prompt_is_too_long(self, builder: PromptBuilder, max_tokens_for_completion: int) -> bool:
        length = builder.prompt_length_in_tokens(self.prompt_format)
        if length + max_tokens_for_completion > int(self.context_size):
            logger.info(
                "prompt is too long: %d + %d > %d",
                length,
                max_tokens_for_completion,
                int(self.context_size),
            )
            return True
        return False


class TokenActivationPairExplainer(NeuronExplainer):
    """Explains a neuron from lists of token/activation pairs (the paper's explainer)."""

    def __init__(
        self,
        model_name: str,
        prompt_format: PromptFormat = PromptFormat.HARMONY_V4,
        context_size: ContextSize | int = ContextSize.FOUR_K,
        few_shot_example_set: FewShotExampleSet = FewShotExampleSet.ORIGINAL,
        repeat_non_zero_activations: bool = True,
        max_concurrent: int | None = 10,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
    ) -> None:
        super().__init__(
            model_name, prompt_format, context_size, max_concurrent, cache, backend=backend
        )
        self.dropped_records = 0
        """Records of the neuron left out of the last prompt to fit the context."""
        self.few_shot_example_set = few_shot_example_set
        self.repeat_non_zero_activations = repeat_non_zero_activations

    def make_explanation_prompt(self, **kwargs: Any) -> Prompt:
        """Prompt for `all_activation_records` (normalized by `max_activation`).

        Keywords: all_activation_records, max_activation, max_tokens_for_completion,
        numbered_list_of_n_explanations (optional), omit_n_activation_records (optional).
        When the prompt is too long for the context, one more record is dropped from the
        few-shot examples, one per example, as the original does.
        """
        records: Sequence[ActivationRecord] = kwargs.pop("all_activation_records")
        kwargs.pop(
            "max_activation"
        )  # kept for compatibility: each record set is normalized by its own max
        n_explanations: int | None = kwargs.pop("numbered_list_of_n_explanations", None)
        omit: int = kwargs.pop("omit_n_activation_records", 0)
        max_tokens_for_completion: int = kwargs.pop("max_tokens_for_completion")
        if kwargs:
            raise TypeError(f"Unexpected kwargs: {kwargs}")
        if n_explanations is not None and n_explanations <= 0:
            raise ValueError(
                f"numbered_list_of_n_explanations must be positive, got {n_explanations}"
            )
        target = list(records)
        self.dropped_records = 0
        while True:
            builder, omitted = self._build(target, n_explanations, omit)
            if omitted == omit and self._prompt_is_too_long(builder, max_tokens_for_completion):
                omit += 1
                continue
            if omitted < omit and n_explanations is not None and len(target) > 1:
                # A numbered list shows the activations too (the original shows none): once the
                # examples are down to one record each, the neuron's own records go, last first.
                target.pop()
                self.dropped_records += 1
                omit = omitted
                continue
            if self.dropped_records:
                logger.warning(
                    "numbered-list prompt: %d of the neuron's %d records dropped to fit the "
                    "context of %d tokens",
                    self.dropped_records,
                    len(records),
                    int(self.context_size),
                )
            elif omitted < omit:
                logger.warning("prompt may exceed the context: no more records to drop")
            return builder.build(self.prompt_format)

    def _build(
        self, records: Sequence[ActivationRecord], n_explanations: int | None, omit: int
    ) -> tuple[PromptBuilder, int]:
        builder = PromptBuilder()
        builder.add_message(
            Role.SYSTEM,
            "We're studying neurons in a neural network. Each neuron looks for some particular "
            "thing in a short document. Look at the parts of the document the neuron activates for "
            "and summarize in a single sentence what the neuron is looking for. Don't list "
            "examples of words.\n\nThe activation format is token<tab>activation. Activation "
            "values range from 0 to 10. A neuron finding what it's looking for is represented by a "
            "non-zero activation value. The higher the activation value, the stronger the match.",
        )
        examples = self.few_shot_example_set.get_examples()
        omitted = 0
        for i, example in enumerate(examples):
            example_records = example.activation_records
            if self.context_size == ContextSize.TWO_K:
                example_records = example_records[:1]
            elif omitted < omit and len(example_records) > 1:
                example_records = example_records[:-1]
                omitted += 1
            self._add_neuron(builder, example_records, i, n_explanations, example.explanation)
        target = records[:2] if self.context_size == ContextSize.TWO_K else records
        self._add_neuron(builder, target, len(examples), n_explanations, None)
        return builder, omitted

    def _add_neuron(
        self,
        builder: PromptBuilder,
        records: Sequence[ActivationRecord],
        index: int,
        n_explanations: int | None,
        explanation: str | None,
    ) -> None:
        max_activation = calculate_max_activation(records)
        user = (
            f"\n\nNeuron {index + 1}\nActivations:"
            f"{format_activation_records(records, max_activation, omit_zeros=False)}"
        )
        if (
            self.repeat_non_zero_activations
            and non_zero_activation_proportion(records, max_activation) < 0.2
        ):
            user += (
                "\nSame activations, but with all zeros filtered out:"
                f"{format_activation_records(records, max_activation, omit_zeros=True)}"
            )
        if n_explanations is None:
            user += f"\nExplanation of neuron {index + 1} behavior:"
            assistant = ""
            if self.prompt_format == PromptFormat.INSTRUCTION_FOLLOWING:
                assistant += f" {EXPLANATION_PREFIX}"
            else:
                user += f" {EXPLANATION_PREFIX}"
            builder.add_message(Role.USER, user)
            if explanation is not None:
                assistant += f" {explanation}."
            if assistant:
                builder.add_message(Role.ASSISTANT, assistant)
            return
        # The original drops `user` (the activations) here, so its numbered-list prompts show
        # no activations at all; we keep them, in the same message as the request for a list.
        if explanation is None:
            builder.add_message(
                Role.USER,
                f"{user}\nHere are {n_explanations} possible explanations for neuron {index + 1} "
                f'behavior, each beginning with "{EXPLANATION_PREFIX}":\n1. {EXPLANATION_PREFIX}',
            )
        else:
            builder.add_message(
                Role.USER,
                f"{user}\nHere is 1 possible explanation for neuron {index + 1} behavior, "
                f'beginning with "{EXPLANATION_PREFIX}":\n1. {EXPLANATION_PREFIX}',
            )
            builder.add_message(Role.ASSISTANT, f" {explanation}.")

    def postprocess_explanations(
        self, completions: list[str], prompt_kwargs: dict[str, Any]
    ) -> list[Any]:
        """Split numbered lists into explanations when a list was asked for."""
        if prompt_kwargs.get("numbered_list_of_n_explanations") is None:
            return completions
        return _strip_prefix_items(completions)


class TokenSpaceRepresentationExplainer(NeuronExplainer):
    """Explains a neuron from a list of tokens it is associated with (e.g. its top tokens)."""

    prompt_prefix = (
        "We're studying neurons in a neural network. Each neuron looks for some particular "
        "kind of token (which can be a word, or part of a word). Look at the tokens the neuron "
        "activates for (listed below) and summarize in a single sentence what the neuron is "
        "looking for. Don't list examples of words."
    )

    def __init__(
        self,
        model_name: str,
        prompt_format: PromptFormat = PromptFormat.HARMONY_V4,
        context_size: ContextSize | int = ContextSize.FOUR_K,
        few_shot_example_set: TokenSpaceFewShotExampleSet = TokenSpaceFewShotExampleSet.ORIGINAL,
        use_few_shot: bool = False,
        output_numbered_list: bool = False,
        max_concurrent: int | None = 10,
        cache: bool = False,
        *,
        backend: LLMBackend | None = None,
    ) -> None:
        super().__init__(
            model_name, prompt_format, context_size, max_concurrent, cache, backend=backend
        )
        self.use_few_shot = use_few_shot
        self.output_numbered_list = output_numbered_list
        self.few_shot_examples = few_shot_example_set if use_few_shot else None
        if use_few_shot and output_numbered_list:
            raise ValueError("numbered-list output is not supported with few-shot examples")

    def make_explanation_prompt(self, **kwargs: Any) -> Prompt:
        """Prompt for `tokens`; raises PromptTooLongError if it exceeds the context."""
        tokens: list[str] = kwargs.pop("tokens")
        max_tokens_for_completion: int = kwargs.pop("max_tokens_for_completion")
        if kwargs:
            raise TypeError(f"Unexpected kwargs: {kwargs}")
        builder = PromptBuilder()
        builder.add_message(Role.SYSTEM, self.prompt_prefix)
        if self.few_shot_examples is not None:
            for example in self.few_shot_examples.get_examples():
                self._add_tokens(builder, _stringify(example.tokens), example.explanation)
        self._add_tokens(builder, _stringify(tokens), None)
        if self._prompt_is_too_long(builder, max_tokens_for_completion):
            raise PromptTooLongError(
                f"the token list does not fit in {int(self.context_size)} tokens of context"
            )
        return builder.build(self.prompt_format)

    def _add_tokens(self, builder: PromptBuilder, tokens: str, explanation: str | None) -> None:
        user = f"\n\n\n\nTokens:\n{tokens}\n\nExplanation:\n"
        assistant = ""
        looking_for = "This neuron is looking for"
        if self.prompt_format == PromptFormat.INSTRUCTION_FOLLOWING:
            assistant += looking_for
        else:
            user += looking_for
        if self.output_numbered_list:
            if self.prompt_format == PromptFormat.INSTRUCTION_FOLLOWING:
                assistant += "\n1."
            else:
                user += "\n1."
        if explanation is not None:
            assistant += f"{explanation}."
        builder.add_message(Role.USER, user)
        if assistant:
            builder.add_message(Role.ASSISTANT, assistant)

    def postprocess_explanations(
        self, completions: list[str], prompt_kwargs: dict[str, Any]
    ) -> list[str]:
        """Split numbered lists, or strip the final period of each explanation."""
        if self.output_numbered_list:
            return _strip_prefix_items(completions)
        return [_remove_final_period(c) for c in completions]


def _stringify(tokens: Sequence[str]) -> str:
    return ", ".join(f"'{t}'" for t in tokens)
