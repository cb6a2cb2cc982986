"""The paper's loop for one neuron: explain on the train split, score on the valid split.

This is the one explain→score loop: runs, estimates and batches all go through
`generate_explanations` and `score_explanation`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from neuron_desk.core.model import (
    ActivationRecord,
    ActivationRecordSliceParams,
    NeuronRecord,
    ScoredExplanation,
)
from neuron_desk.core.scores import best_first
from neuron_desk.method.calibration import (
    CalibratedNeuronSimulator,
    UncalibratedNeuronSimulator,
)
from neuron_desk.method.explainers import NeuronExplainer
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

    @property
    def slices(self) -> ActivationRecordSliceParams:
        """How the records are split (train, calibration, valid, test)."""
        return ActivationRecordSliceParams(n_examples_per_split=self.n_examples_per_split)


async def generate_explanations(
    record: NeuronRecord,
    explainer: NeuronExplainer,
    settings: ExplainAndScoreSettings | None = None,
) -> list[str]:
    """The explainer's answers for the record's train split, as the model wrote them."""
    settings = settings or ExplainAndScoreSettings()
    answers = await explainer.generate_explanations(
        all_activation_records=record.train_activation_records(settings.slices),
        max_activation=record.max_activation,
        num_samples=settings.num_samples,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )
    return [str(answer) for answer in answers]


async def score_explanation(
    record: NeuronRecord,
    explanation: str,
    make_simulator: SimulatorFactory,
    settings: ExplainAndScoreSettings | None = None,
    on: Sequence[ActivationRecord] | None = None,
) -> ScoredExplanation:
    """Score one explanation (generated or written by hand) on the valid split, or on the
    records `on` (e.g. the user's own text) with the same simulator and calibration."""
    settings = settings or ExplainAndScoreSettings()
    simulator = settings.calibration(make_simulator(explanation))
    await simulator.calibrate(record.calibration_activation_records(settings.slices))
    scored = await simulate_and_score(
        simulator, record.valid_activation_records(settings.slices) if on is None else on
    )
    return ScoredExplanation(explanation=explanation, scored_simulation=scored)


async def explain_and_score(
    record: NeuronRecord,
    explainer: NeuronExplainer,
    make_simulator: SimulatorFactory,
    settings: ExplainAndScoreSettings | None = None,
) -> list[ScoredExplanation]:
    """Generate explanations from the train split and score each one; best first."""
    settings = settings or ExplainAndScoreSettings()
    explanations = [e.strip() for e in await generate_explanations(record, explainer, settings)]
    scored = await asyncio.gather(
        *(score_explanation(record, e, make_simulator, settings) for e in explanations if e)
    )
    return best_first(scored, ScoredExplanation.get_preferred_score)
