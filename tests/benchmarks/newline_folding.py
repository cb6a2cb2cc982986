"""The compatibility setting's difference on a newline-firing neuron (prompt-logprobs scorer).

    python tests/benchmarks/newline_folding.py

Ten 64-token sequences of a neuron that fires 10 on newline tokens (2 on "."); a simulator
tokenizer that writes runs of newlines as one token (as GPT-2's does), and an oracle that puts
the true value's digit at every "unknown" slot. The default reads every slot; the original
(`--compatible`) scores 0.0 wherever a newline was folded into the next line's token.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from neuron_desk.method import ExplanationNeuronSimulator
from neuron_desk.method.scoring import correlation_score
from neuron_desk.method.simulators import parse_prompt_logprobs_response
from tests.method.test_compatibility import folding_tokenizer
from tests.method.test_simulator_parsing import echo_response


def main() -> None:
    rng = random.Random(0)
    words = [" the", " cat", " sat", " on", " mat", ".", " a", " dog"]
    expected: dict[bool, list[float]] = {False: [], True: []}
    true: list[float] = []
    for _ in range(10):
        tokens = [rng.choice([*words, "\n"]) for _ in range(64)]
        truth = [10 if t == "\n" else (2 if t == "." else 0) for t in tokens]
        prompt = ExplanationNeuronSimulator("m", "newlines").make_simulation_prompt(tokens)
        assert isinstance(prompt, str)
        pieces = folding_tokenizer(prompt)
        slots = [i for i, p in enumerate(pieces) if p == "unknown"][-len(tokens) :]
        response = echo_response(prompt, pieces, dict(zip(slots, truth, strict=True)))
        true += [float(v) for v in truth]
        for fold in (False, True):
            simulation = parse_prompt_logprobs_response(
                response, prompt, tokens, fold_newlines=fold
            )
            expected[fold] += simulation.expected_activations
    for fold, label in ((False, "default (corrected)"), (True, "--compatible (original)")):
        print(f"{label:26} score {correlation_score(expected[fold], true):.3f}")


if __name__ == "__main__":
    main()
