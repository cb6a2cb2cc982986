"""Prompt assembly in the three formats of the original tooling."""

from __future__ import annotations

from enum import Enum
from typing import TypedDict

from neuron_desk.method.tokens import count_tokens


class HarmonyMessage(TypedDict):
    """One chat message: a role and its content."""

    role: str
    content: str


class PromptFormat(str, Enum):
    """How the parts of a prompt are put together for an endpoint."""

    NONE = "none"
    """One string, for models without instruction tokens (completions endpoint)."""
    INSTRUCTION_FOLLOWING = "instruction_following"
    """One string with <|endofprompt|> after the last user message (completions endpoint)."""
    HARMONY_V4 = "harmony_v4"
    """A list of role/content messages (chat completions endpoint)."""

    @classmethod
    def from_string(cls, s: str) -> PromptFormat:
        """The format whose value is `s`."""
        for prompt_format in cls:
            if prompt_format.value == s:
                return prompt_format
        raise ValueError(f"{s} is not a valid PromptFormat")


class Role(str, Enum):
    """Chat roles."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


Prompt = str | list[HarmonyMessage]
END_OF_PROMPT = "<|endofprompt|>"


class PromptBuilder:
    """Collects messages, checks their turn order, and renders them in a PromptFormat."""

    def __init__(self) -> None:
        self._messages: list[HarmonyMessage] = []

    def add_message(self, role: Role, message: str) -> None:
        """Append a message."""
        self._messages.append(HarmonyMessage(role=role, content=message))

    def prompt_length_in_tokens(self, prompt_format: PromptFormat) -> int:
        """Tokens the prompt takes (cl100k_base; chat adds 4 per message and 2 for the reply)."""
        if prompt_format == PromptFormat.HARMONY_V4:
            return sum(4 + count_tokens(m["content"]) for m in self._messages) + 2
        prompt = self.build(prompt_format)
        assert isinstance(prompt, str)
        return count_tokens(prompt)

    def build(
        self, prompt_format: PromptFormat, *, allow_extra_system_messages: bool = False
    ) -> Prompt:
        """Check the turn order and render: a string, or a list of messages for HARMONY_V4."""
        messages = [HarmonyMessage(role=m["role"], content=m["content"]) for m in self._messages]
        expected = Role.SYSTEM
        for message in messages:
            role = message["role"]
            if role != expected and not (allow_extra_system_messages and role == Role.SYSTEM):
                raise ValueError(f"Expected message from {expected} but got message from {role}")
            expected = Role.USER if role in (Role.SYSTEM, Role.ASSISTANT) else Role.ASSISTANT
        if prompt_format == PromptFormat.HARMONY_V4:
            return messages
        if prompt_format == PromptFormat.INSTRUCTION_FOLLOWING:
            user_messages = [m for m in messages if m["role"] == Role.USER]
            if not user_messages:
                raise ValueError("an instruction-following prompt needs a user message")
            user_messages[-1]["content"] += END_OF_PROMPT
        if prompt_format in (PromptFormat.NONE, PromptFormat.INSTRUCTION_FOLLOWING):
            return "".join(m["content"] for m in messages)
        raise ValueError(f"Unknown prompt format: {prompt_format}")


def chat_messages(messages: list[HarmonyMessage]) -> list[dict[str, str]]:
    """Messages as plain JSON objects for a chat request body."""
    return [{"role": Role(m["role"]).value, "content": m["content"]} for m in messages]
