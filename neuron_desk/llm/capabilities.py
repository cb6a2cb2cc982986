"""What an endpoint + model can do, found once by a probe, and the simulator chosen from it.

The probe sends a few tiny requests:

1. `/completions` with `echo` + `logprobs`: do prompt positions come back with top logprobs?
   (The paper's all-at-once scorer needs that: vLLM, llama.cpp's Python server, davinci-002.)
2. `/completions` with `logprobs` only, when echo did not work: next-token top logprobs?
3. `/chat/completions` with `logprobs: true, top_logprobs: 20` (then 5): how many come back?

The answer is remembered in the store's `capabilities` table per endpoint and model. The
simulator is then prompt-logprobs all-at-once if available, else chat-generation all-at-once
(chat top_logprobs), else one-at-a-time (completions next-token logprobs); the user may force
one. An endpoint with no logprobs at all can explain but not score, and `SimulatorChoice`
says why in words.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from neuron_desk.core.backend import JSONDict, LLMBackend
from neuron_desk.core.errors import BackendHTTPError, BackendResponseError, MethodError
from neuron_desk.core.model import SimulatorMethod
from neuron_desk.method.prompts import PromptFormat
from neuron_desk.method.simulators import (
    ChatGenerationSimulator,
    ExplanationNeuronSimulator,
    ExplanationTokenByTokenSimulator,
    LogprobFreeExplanationTokenSimulator,
    NeuronSimulator,
)

if TYPE_CHECKING:
    from neuron_desk.data.store import Store

logger = logging.getLogger(__name__)

PROBE_PROMPT = "The quick brown fox jumps over the lazy dog. 1 2 3"
PROBE_MESSAGE = "Reply with a single digit from 0 to 9."
CAPABILITIES_VERSION = 1

METHOD_NAMES: dict[str, SimulatorMethod] = {
    "prompt-logprobs": SimulatorMethod.PROMPT_LOGPROBS,
    "chat": SimulatorMethod.CHAT_GENERATION,
    "one-at-a-time": SimulatorMethod.ONE_AT_A_TIME,
    "written-digits": SimulatorMethod.CHAT_WRITTEN_DIGITS,
    "logprob-free": SimulatorMethod.LOGPROB_FREE,
}
"""Command-line and settings names of the simulators."""


def method_name(method: SimulatorMethod) -> str:
    """The short name of a simulator method ("prompt-logprobs", "chat", "one-at-a-time")."""
    return next(name for name, m in METHOD_NAMES.items() if m == method)


def parse_method(name: str | None) -> SimulatorMethod | None:
    """A method from its short name; None for "auto" or None."""
    if name is None or name == "auto":
        return None
    if name in METHOD_NAMES:
        return METHOD_NAMES[name]
    try:
        return SimulatorMethod(name)
    except ValueError:
        raise ValueError(
            f"unknown simulator method {name!r}: auto, {', '.join(METHOD_NAMES)}"
        ) from None


@dataclass
class Capabilities:
    """What the probe found for one endpoint and model."""

    completions: bool = False
    """The endpoint answers /completions for this model."""
    prompt_logprobs: bool = False
    """/completions returns top logprobs at prompt positions with echo."""
    prompt_top_logprobs: int = 0
    """How many alternatives per prompt position (the `logprobs` value that was accepted)."""
    completion_logprobs: int = 0
    """How many next-token alternatives /completions returns (0: none)."""
    chat: bool = False
    """The endpoint answers /chat/completions for this model."""
    chat_top_logprobs: int = 0
    """How many alternatives chat returns per generated token (0: none)."""
    notes: list[str] = field(default_factory=list)
    """What failed and why, in the server's words."""
    probed_at: float = 0.0
    version: int = CAPABILITIES_VERSION

    @property
    def any_logprobs(self) -> bool:
        """Whether any simulator can run here."""
        return self.prompt_logprobs or self.completion_logprobs > 0 or self.chat_top_logprobs > 0

    def to_json(self) -> dict[str, Any]:
        """For the store."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Capabilities | None:
        """From the store; None if written by another version of the probe."""
        if not isinstance(data, dict) or data.get("version") != CAPABILITIES_VERSION:
            return None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """One line for people."""
        parts = [
            f"prompt logprobs: {'yes' if self.prompt_logprobs else 'no'}",
            f"completion logprobs: {self.completion_logprobs or 'no'}",
            f"chat top_logprobs: {self.chat_top_logprobs or 'no'}",
        ]
        return "; ".join(parts)


def _raise_if_fatal(exc: BackendHTTPError) -> None:
    """Authentication errors and unknown models are not capabilities: report them."""
    if exc.status_code in (401, 403):
        raise exc
    text = str(exc).lower()
    unknown_model = "model" in text and ("does not exist" in text or "not found" in text)
    if exc.status_code == 404 and unknown_model and "not supported" not in text:
        raise exc  # (OpenAI's "This is a chat model and not supported in v1/completions" is
        # a capability: that model has no completions endpoint)


async def _try(
    send: Callable[[JSONDict], Any], body: JSONDict, notes: list[str], what: str
) -> JSONDict | None:
    try:
        response: JSONDict = await send(body)
        return response
    except BackendHTTPError as exc:
        _raise_if_fatal(exc)
        notes.append(f"{what}: {exc}")
    except BackendResponseError as exc:
        notes.append(f"{what}: {exc}")
    return None


def _echo_ok(response: JSONDict) -> bool:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    logprobs = choices[0].get("logprobs")
    if not isinstance(logprobs, dict):
        return False
    tokens, top = logprobs.get("tokens"), logprobs.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(top, list) or len(tokens) < 3:
        return False
    spelled = "".join(str(t) for t in tokens)
    if PROBE_PROMPT not in spelled:
        return False
    filled = [entry for entry in top[1:-1] if isinstance(entry, dict) and entry]
    return len(filled) >= (len(top) - 2) // 2


def _completion_top_count(response: JSONDict) -> int:
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return 0
    logprobs = choices[0].get("logprobs")
    top = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    if isinstance(top, list) and top and isinstance(top[0], dict):
        return len(top[0])
    return 0


def _chat_top_count(response: JSONDict) -> int:
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return 0
    logprobs = choices[0].get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return 0
    alternatives = content[0].get("top_logprobs")
    return len(alternatives) if isinstance(alternatives, list) else 0


async def probe(backend: LLMBackend, model: str) -> Capabilities:
    """Find out what `model` at this endpoint returns (a handful of one-token requests)."""
    caps = Capabilities(probed_at=time.time())
    notes = caps.notes
    base: JSONDict = {"model": model, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0}
    for top in (15, 5):
        response = await _try(
            backend.completions, {**base, "echo": True, "logprobs": top}, notes, "echo"
        )
        if response is None:
            continue
        caps.completions = True
        if _echo_ok(response):
            caps.prompt_logprobs = True
            caps.prompt_top_logprobs = top
            caps.completion_logprobs = top
            break
        notes.append(f"echo with logprobs={top}: the prompt came back without logprobs")
        break
    if not caps.prompt_logprobs:
        for top in (15, 5):
            response = await _try(
                backend.completions, {**base, "logprobs": top}, notes, "completion logprobs"
            )
            if response is None:
                continue
            caps.completions = True
            caps.completion_logprobs = min(top, _completion_top_count(response))
            break
    chat: JSONDict = {
        "model": model,
        "messages": [{"role": "user", "content": PROBE_MESSAGE}],
        "max_tokens": 1,
        "temperature": 0,
    }
    for top in (20, 5):
        response = await _try(
            backend.chat_completions,
            {**chat, "logprobs": True, "top_logprobs": top},
            notes,
            "chat top_logprobs",
        )
        if response is None:
            continue
        caps.chat = True
        caps.chat_top_logprobs = min(top, _chat_top_count(response))
        if not caps.chat_top_logprobs:
            notes.append("chat answered without top_logprobs")
        break
    if not caps.chat and await _try(backend.chat_completions, chat, notes, "chat") is not None:
        caps.chat = True
    logger.info("probed %s: %s", model, caps.describe())
    return caps


@dataclass
class _SharedProbe:
    """A probe in flight and how many callers wait for it."""

    task: asyncio.Task[Capabilities]
    waiters: int = 0


_PROBES: dict[tuple[int, str, str, int], _SharedProbe] = {}
"""Probes in flight by (event loop, endpoint, model, store): callers asking meanwhile share one."""


async def capabilities_for(
    backend: LLMBackend,
    endpoint: str,
    model: str,
    store: Store | None = None,
    *,
    refresh: bool = False,
) -> Capabilities:
    """The remembered capabilities of `endpoint` + `model`, probing (and storing) on a miss.

    Concurrent callers (the neurons of a batch starting together) share one probe: the first
    starts it, the others wait for its answer. A cancelled caller leaves it running for the
    others; when the last one is cancelled, the probe's requests are cancelled too.
    """
    if store is not None and not refresh:
        known = known_capabilities(store, endpoint, model)
        if known is not None:
            return known
    key = (id(asyncio.get_running_loop()), endpoint, model, id(store))
    shared = _PROBES.get(key)
    if shared is None:
        task = asyncio.ensure_future(_probe_and_remember(backend, endpoint, model, store))
        shared = _PROBES[key] = _SharedProbe(task)

        def forget(done: asyncio.Task[Capabilities]) -> None:
            if key in _PROBES and _PROBES[key].task is done:
                del _PROBES[key]
            if not done.cancelled():
                done.exception()  # retrieved here too: every waiter may have gone

        task.add_done_callback(forget)
    shared.waiters += 1
    try:
        return await asyncio.shield(shared.task)
    finally:
        shared.waiters -= 1
        if shared.waiters == 0 and not shared.task.done():
            shared.task.cancel()


async def _probe_and_remember(
    backend: LLMBackend, endpoint: str, model: str, store: Store | None
) -> Capabilities:
    caps = await probe(backend, model)
    if store is not None and not store.read_only:
        with store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO capabilities VALUES (?, ?, ?, ?)",
                (endpoint, model, json.dumps(caps.to_json()), time.time()),
            )
    return caps


def known_capabilities(store: Store, endpoint: str, model: str) -> Capabilities | None:
    """What an earlier probe found (the `capabilities` table), without probing."""
    rows = store.query(
        "SELECT data FROM capabilities WHERE endpoint=? AND model=?", (endpoint, model)
    )
    return Capabilities.from_json(json.loads(rows[0][0])) if rows else None


@dataclass(frozen=True)
class SimulatorChoice:
    """The simulator to score with, and why (method None: scoring can't run here)."""

    method: SimulatorMethod | None
    reason: str
    chat_one_at_a_time: bool = True
    """For one-at-a-time: ask through chat (True) or completions (False)."""
    top_logprobs: int = 15


def choose_simulator(
    caps: Capabilities, forced: SimulatorMethod | None = None, where: str = "this endpoint"
) -> SimulatorChoice:
    """Pick the simulator from the capabilities, or take the user's choice."""
    chat_top = caps.chat_top_logprobs
    if forced is not None:
        supported = {
            SimulatorMethod.PROMPT_LOGPROBS: caps.prompt_logprobs,
            SimulatorMethod.CHAT_GENERATION: chat_top > 0,
            SimulatorMethod.ONE_AT_A_TIME: chat_top > 0 or caps.completion_logprobs > 0,
            SimulatorMethod.CHAT_WRITTEN_DIGITS: caps.chat,
            SimulatorMethod.LOGPROB_FREE: caps.chat,
        }[forced]
        reason = f"{method_name(forced)} (chosen by the user)"
        if not supported:
            reason += f"; the probe found {where} does not support it ({caps.describe()})"
        return SimulatorChoice(
            forced,
            reason,
            chat_one_at_a_time=chat_top > 0 or caps.completion_logprobs == 0,
            top_logprobs=_top_for(forced, caps),
        )
    if caps.prompt_logprobs:
        return SimulatorChoice(
            SimulatorMethod.PROMPT_LOGPROBS,
            "prompt-logprobs: the endpoint echoes prompts with logprobs (the paper's scorer)",
            top_logprobs=_top_for(SimulatorMethod.PROMPT_LOGPROBS, caps),
        )
    if chat_top > 0:
        return SimulatorChoice(
            SimulatorMethod.CHAT_GENERATION,
            f"chat: no prompt logprobs here, but chat returns top_logprobs ({chat_top})",
            top_logprobs=_top_for(SimulatorMethod.CHAT_GENERATION, caps),
        )
    if caps.completion_logprobs > 0:
        return SimulatorChoice(
            SimulatorMethod.ONE_AT_A_TIME,
            "one-at-a-time: only next-token logprobs on /completions (one request per token)",
            chat_one_at_a_time=False,
            top_logprobs=_top_for(SimulatorMethod.ONE_AT_A_TIME, caps),
        )
    if caps.chat:
        return SimulatorChoice(
            SimulatorMethod.CHAT_WRITTEN_DIGITS,
            "written digits: the probe found no logprobs, so chat generation takes each digit "
            "the model writes with certainty (coarser than a distribution; scores are not "
            "comparable with logprob-based ones)",
        )
    return SimulatorChoice(None, no_logprobs_message(caps, where))


def _top_for(method: SimulatorMethod, caps: Capabilities) -> int:
    if method == SimulatorMethod.PROMPT_LOGPROBS:
        return caps.prompt_top_logprobs or 5
    if method == SimulatorMethod.CHAT_GENERATION or caps.chat_top_logprobs:
        return min(20, caps.chat_top_logprobs or 20)
    return caps.completion_logprobs or 5


def no_logprobs_message(caps: Capabilities, where: str = "this endpoint") -> str:
    """Why scoring can't run on an endpoint without logprobs, and what to do."""
    found = "; ".join(caps.notes[-3:]) if caps.notes else caps.describe()
    return (
        f"scoring can't run on {where}: it returns no logprobs (no prompt logprobs with echo, "
        "no completion logprobs, no chat top_logprobs) and no chat completions for the "
        "written-digits and logprob-free simulators. Explaining may still work here. To score, "
        "use an endpoint with chat completions, ideally with logprobs: OpenAI chat models, "
        f"vLLM, llama.cpp's server, or the local profile. (Probe: {found})"
    )


SimulatorFactory = Callable[[str], NeuronSimulator]


def simulator_factory(
    choice: SimulatorChoice,
    model: str,
    backend: LLMBackend,
    *,
    max_concurrent: int | None = None,
    compatible: bool = False,
) -> SimulatorFactory:
    """A function building the chosen simulator for an explanation.

    `compatible` reproduces the original where it differs: prompt-logprobs scores 0.0 where a
    newline folded into a token, one-at-a-time asks /completions for one token.
    """
    method = choice.method
    if method is None:
        raise MethodError(choice.reason)
    top = choice.top_logprobs
    if method == SimulatorMethod.LOGPROB_FREE:
        return lambda e: LogprobFreeExplanationTokenSimulator(
            model, e, max_concurrent=max_concurrent, backend=backend
        )
    if method == SimulatorMethod.CHAT_WRITTEN_DIGITS:
        return lambda e: ChatGenerationSimulator(
            model, e, max_concurrent=max_concurrent, backend=backend, written_digits=True
        )
    if method == SimulatorMethod.PROMPT_LOGPROBS:
        return lambda e: ExplanationNeuronSimulator(
            model,
            e,
            max_concurrent=max_concurrent,
            backend=backend,
            top_logprobs=top,
            fold_newlines=compatible,
        )
    if method == SimulatorMethod.CHAT_GENERATION:
        return lambda e: ChatGenerationSimulator(
            model, e, max_concurrent=max_concurrent, backend=backend, top_logprobs=top
        )
    chat = choice.chat_one_at_a_time and not compatible
    prompt_format = PromptFormat.HARMONY_V4 if chat else PromptFormat.INSTRUCTION_FOLLOWING
    return lambda e: ExplanationTokenByTokenSimulator(
        model,
        e,
        max_concurrent=max_concurrent,
        prompt_format=prompt_format,
        backend=backend,
        top_logprobs=top,
        max_next_tokens=1 if compatible else 2,
    )
