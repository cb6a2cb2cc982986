"""The paper's loop for one neuron: explain on the train split, score on the valid split."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from neuron_desk.core.model import (
    ActivationRecordSliceParams,
    NeuronRecord,
    ScoredExplanation,
)
from neuron_desk.method.calibration import (
    CalibratedNeuronSimulator,
    UncalibratedNeuronSimulator,
)
from neuron_desk.method.explainers import TokenActivationPairExplainer
from neuron_desk.method.scoring import simulate_and_score
from neuron_desk.method.simulators import NeuronSimulator

SimulatorFactory = Callable[[str], NeuronSimulator]
"""Builds a simulator for an explanation."""


@dataclass
class ExplainAndScoreSettings:
    """Knobs of one explain-and-score run (defaults: the paper's demo notebook)."""

    n_examples_per_split: int = 5
    num_samples: int = 1
    max_tokens: int = 60
    temperature: float = 1.0
    calibration: type[CalibratedNeuronSimulator] = UncalibratedNeuronSimulator


async def score_explanation(
    record: NeuronRecord,
    explanation: str,
    make_simulator: SimulatorFactory,
    settings: ExplainAndScoreSettings | None = None,
) -> ScoredExplanation:
    """Score one explanation (generated or written by hand) on the valid split."""
    settings = settings or ExplainAndScoreSettings()
    params = ActivationRecordSliceParams(n_examples_per_split=settings.n_examples_per_split)
    simulator = settings.calibration(make_simulator(explanation))
    await simulator.calibrate(record.calibration_activation_records(params))
    scored = await simulate_and_score(simulator, record.valid_activation_records(params))
    return ScoredExplanation(explanation=explanation, scored_simulation=scored)


async def explain_and_score(
    record: NeuronRecord,
    explainer: TokenActivationPairExplainer,
    make_simulator: SimulatorFactory,
    settings: ExplainAndScoreSettings | None = None,
) -> list[ScoredExplanation]:
    """Generate explanations from the train split and score each one; best first."""
    settings = settings or ExplainAndScoreSettings()
    params = ActivationRecordSliceParams(n_examples_per_split=settings.n_examples_per_split)
    train = record.train_activation_records(params)
    explanations = await explainer.generate_explanations(
        all_activation_records=train,
        max_activation=record.max_activation,
        num_samples=settings.num_samples,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )
    scored = await asyncio.gather(
        *(score_explanation(record, e.strip(), make_simulator, settings) for e in explanations)
    )
    return sorted(scored, key=lambda s: -(s.get_preferred_score() or -2.0))
