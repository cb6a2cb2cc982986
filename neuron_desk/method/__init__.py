"""The paper's method, with neuron-explainer's public names.

A notebook written for neuron-explainer ports by changing its imports to this package:
`from neuron_desk.method import TokenActivationPairExplainer, ...`. Constructors take the
same keywords; the LLM backend is an extra keyword (`backend=`), resolved from settings on
first use when omitted, so nothing here needs a network or an API key to be built.

The names load lazily (module `__getattr__`): importing `neuron_desk.method` or one of its
submodules (`method.tokens`, ...) costs no NumPy and no LLM stack until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuron_desk.core.model import (
        ActivationRecord,
        ActivationRecordSliceParams,
        ActivationScale,
        NeuronId,
        NeuronRecord,
        NeuronSimulationResults,
        ScoredExplanation,
        ScoredSequenceSimulation,
        ScoredSimulation,
        SequenceSimulation,
        SimulatorMethod,
        TokenLookupTableSummaryOfNeuron,
        TokensAndWeights,
        WeightBasedSummaryOfNeuron,
    )
    from neuron_desk.method.activations import (
        MAX_NORMALIZED_ACTIVATION,
        UNKNOWN_ACTIVATION_STRING,
        calculate_max_activation,
        format_activation_records,
        format_sequences_for_simulation,
        non_zero_activation_proportion,
        normalize_activations,
        relu,
    )
    from neuron_desk.method.calibration import (
        CalibratedNeuronSimulator,
        LinearCalibratedNeuronSimulator,
        PercentileMatchingCalibratedNeuronSimulator,
        UncalibratedNeuronSimulator,
    )
    from neuron_desk.method.explainers import (
        EXPLANATION_PREFIX,
        ContextSize,
        NeuronExplainer,
        TokenActivationPairExplainer,
        TokenSpaceRepresentationExplainer,
    )
    from neuron_desk.method.few_shot import (
        NEWER_EXAMPLES,
        NEWER_SINGLE_TOKEN_EXAMPLE,
        ORIGINAL_EXAMPLES,
        TEST_EXAMPLES,
        TEST_SINGLE_TOKEN_EXAMPLE,
        Example,
        FewShotExampleSet,
        TokenSpaceFewShotExampleSet,
    )
    from neuron_desk.method.loading import (
        load_neuron,
        load_neuron_async,
        load_neuron_explanations,
        load_neuron_explanations_async,
        load_token_lookup_table_connections_of_neuron,
        load_token_weight_connections_of_neuron,
    )
    from neuron_desk.method.pipeline import (
        ExplainAndScoreSettings,
        explain_and_score,
        score_explanation,
    )
    from neuron_desk.method.prompts import HarmonyMessage, PromptBuilder, PromptFormat, Role
    from neuron_desk.method.puzzles import (
        PUZZLES_BY_NAME,
        Puzzle,
        convert_puzzle_dict_to_puzzle,
        convert_puzzle_to_tokenized_sentences,
    )
    from neuron_desk.method.scoring import (
        absolute_dev_explained_score_from_sequences,
        aggregate_scored_sequence_simulations,
        correlation_score,
        make_simulator_and_score,
        rsquared_score_from_sequences,
        simulate_and_score,
    )
    from neuron_desk.method.simulators import (
        VALID_ACTIVATION_TOKENS,
        ChatGenerationSimulator,
        ExplanationNeuronSimulator,
        ExplanationTokenByTokenSimulator,
        LogprobFreeExplanationTokenSimulator,
        NeuronSimulator,
    )

_MODULE_OF_NAMES: dict[str, tuple[str, ...]] = {
    "neuron_desk.core.model": (
        "ActivationRecord",
        "ActivationRecordSliceParams",
        "ActivationScale",
        "NeuronId",
        "NeuronRecord",
        "NeuronSimulationResults",
        "ScoredExplanation",
        "ScoredSequenceSimulation",
        "ScoredSimulation",
        "SequenceSimulation",
        "SimulatorMethod",
        "TokenLookupTableSummaryOfNeuron",
        "TokensAndWeights",
        "WeightBasedSummaryOfNeuron",
    ),
    "neuron_desk.method.activations": (
        "MAX_NORMALIZED_ACTIVATION",
        "UNKNOWN_ACTIVATION_STRING",
        "calculate_max_activation",
        "format_activation_records",
        "format_sequences_for_simulation",
        "non_zero_activation_proportion",
        "normalize_activations",
        "relu",
    ),
    "neuron_desk.method.calibration": (
        "CalibratedNeuronSimulator",
        "LinearCalibratedNeuronSimulator",
        "PercentileMatchingCalibratedNeuronSimulator",
        "UncalibratedNeuronSimulator",
    ),
    "neuron_desk.method.explainers": (
        "EXPLANATION_PREFIX",
        "ContextSize",
        "NeuronExplainer",
        "TokenActivationPairExplainer",
        "TokenSpaceRepresentationExplainer",
    ),
    "neuron_desk.method.few_shot": (
        "NEWER_EXAMPLES",
        "NEWER_SINGLE_TOKEN_EXAMPLE",
        "ORIGINAL_EXAMPLES",
        "TEST_EXAMPLES",
        "TEST_SINGLE_TOKEN_EXAMPLE",
        "Example",
        "FewShotExampleSet",
        "TokenSpaceFewShotExampleSet",
    ),
    "neuron_desk.method.loading": (
        "load_neuron",
        "load_neuron_async",
        "load_neuron_explanations",
        "load_neuron_explanations_async",
        "load_token_lookup_table_connections_of_neuron",
        "load_token_weight_connections_of_neuron",
    ),
    "neuron_desk.method.pipeline": (
        "ExplainAndScoreSettings",
        "explain_and_score",
        "score_explanation",
    ),
    "neuron_desk.method.prompts": (
        "HarmonyMessage",
        "PromptBuilder",
        "PromptFormat",
        "Role",
    ),
    "neuron_desk.method.puzzles": (
        "PUZZLES_BY_NAME",
        "Puzzle",
        "convert_puzzle_dict_to_puzzle",
        "convert_puzzle_to_tokenized_sentences",
    ),
    "neuron_desk.method.scoring": (
        "absolute_dev_explained_score_from_sequences",
        "aggregate_scored_sequence_simulations",
        "correlation_score",
        "make_simulator_and_score",
        "rsquared_score_from_sequences",
        "simulate_and_score",
    ),
    "neuron_desk.method.simulators": (
        "VALID_ACTIVATION_TOKENS",
        "ChatGenerationSimulator",
        "ExplanationNeuronSimulator",
        "ExplanationTokenByTokenSimulator",
        "LogprobFreeExplanationTokenSimulator",
        "NeuronSimulator",
    ),
}
_MODULE_OF: dict[str, str] = {
    name: module for module, names in _MODULE_OF_NAMES.items() for name in names
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (and kept in this module)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "EXPLANATION_PREFIX",
    "MAX_NORMALIZED_ACTIVATION",
    "NEWER_EXAMPLES",
    "NEWER_SINGLE_TOKEN_EXAMPLE",
    "ORIGINAL_EXAMPLES",
    "PUZZLES_BY_NAME",
    "TEST_EXAMPLES",
    "TEST_SINGLE_TOKEN_EXAMPLE",
    "UNKNOWN_ACTIVATION_STRING",
    "VALID_ACTIVATION_TOKENS",
    "ActivationRecord",
    "ActivationRecordSliceParams",
    "ActivationScale",
    "CalibratedNeuronSimulator",
    "ChatGenerationSimulator",
    "ContextSize",
    "Example",
    "ExplainAndScoreSettings",
    "ExplanationNeuronSimulator",
    "ExplanationTokenByTokenSimulator",
    "FewShotExampleSet",
    "HarmonyMessage",
    "LinearCalibratedNeuronSimulator",
    "LogprobFreeExplanationTokenSimulator",
    "NeuronExplainer",
    "NeuronId",
    "NeuronRecord",
    "NeuronSimulationResults",
    "NeuronSimulator",
    "PercentileMatchingCalibratedNeuronSimulator",
    "PromptBuilder",
    "PromptFormat",
    "Puzzle",
    "Role",
    "ScoredExplanation",
    "ScoredSequenceSimulation",
    "ScoredSimulation",
    "SequenceSimulation",
    "SimulatorMethod",
    "TokenActivationPairExplainer",
    "TokenLookupTableSummaryOfNeuron",
    "TokenSpaceFewShotExampleSet",
    "TokenSpaceRepresentationExplainer",
    "TokensAndWeights",
    "UncalibratedNeuronSimulator",
    "WeightBasedSummaryOfNeuron",
    "absolute_dev_explained_score_from_sequences",
    "aggregate_scored_sequence_simulations",
    "calculate_max_activation",
    "convert_puzzle_dict_to_puzzle",
    "convert_puzzle_to_tokenized_sentences",
    "correlation_score",
    "explain_and_score",
    "format_activation_records",
    "format_sequences_for_simulation",
    "load_neuron",
    "load_neuron_async",
    "load_neuron_explanations",
    "load_neuron_explanations_async",
    "load_token_lookup_table_connections_of_neuron",
    "load_token_weight_connections_of_neuron",
    "make_simulator_and_score",
    "non_zero_activation_proportion",
    "normalize_activations",
    "relu",
    "rsquared_score_from_sequences",
    "score_explanation",
    "simulate_and_score",
]
