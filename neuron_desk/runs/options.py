"""What a run uses: models, simulator, sampling, budget and cache behaviour — built one way,
from an endpoint profile and the caller's overrides (the CLI, the app and batches alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neuron_desk.core.errors import BackendConfigError
from neuron_desk.core.model import SimulatorMethod
from neuron_desk.llm.capabilities import SimulatorChoice, parse_method
from neuron_desk.llm.ledger import Budget
from neuron_desk.llm.profiles import Profile
from neuron_desk.method.calibration import UncalibratedNeuronSimulator
from neuron_desk.method.pipeline import ExplainAndScoreSettings
from neuron_desk.method.prompts import PromptFormat


@dataclass
class RunOptions:
    """What to run with: models, simulator, sampling, budget and cache behaviour."""

    explainer_model: str = ""
    simulator_model: str = ""
    method: SimulatorMethod | None = None
    """Force a simulator; None chooses from the endpoint's capabilities."""
    samples: int = 1
    max_tokens: int = 60
    temperature: float = 1.0
    n_examples_per_split: int = 5
    budget: Budget = field(default_factory=Budget)
    regenerate: bool = False
    """Bypass the response cache lookups (fresh samples); answers are cached again."""
    use_cache: bool = True
    refresh_capabilities: bool = False
    max_concurrent: int | None = None
    compatible: bool = False
    """Reproduce the original where it differs (newline folding; one-at-a-time over
    completions with max_tokens 1), to compare with published scores."""

    @classmethod
    def for_profile(
        cls,
        profile: Profile,
        *,
        model: str | None = None,
        simulator_model: str | None = None,
        method: str | None = None,
        samples: int = 1,
        temperature: float = 1.0,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        regenerate: bool = False,
        use_cache: bool = True,
        refresh_capabilities: bool = False,
    ) -> RunOptions:
        """Options from a profile's models, simulator and budget, with the caller's overrides.

        `model` names the model for both roles, `simulator_model` the simulator's alone; a
        budget given here replaces the profile's cap of the same unit.
        """
        return cls(
            explainer_model=model or profile.explainer_model,
            simulator_model=(
                simulator_model or model or profile.simulator_model or profile.explainer_model
            ),
            method=parse_method(method or profile.simulator_method),
            samples=samples,
            temperature=temperature,
            budget=Budget(
                budget_tokens if budget_tokens is not None else profile.budget_tokens,
                budget_usd if budget_usd is not None else profile.budget_usd,
            ),
            regenerate=regenerate,
            use_cache=use_cache,
            refresh_capabilities=refresh_capabilities,
        )

    def require_models(self, *, explain: bool, profile: str = "") -> None:
        """BackendConfigError unless the models a run needs are named."""
        if not self.simulator_model or (explain and not self.explainer_model):
            where = f" (profile {profile!r} names none)" if profile else ""
            raise BackendConfigError(f"no model: pass --model{where}")

    def settings(self) -> ExplainAndScoreSettings:
        """The method's settings for these options."""
        return ExplainAndScoreSettings(
            n_examples_per_split=self.n_examples_per_split,
            num_samples=self.samples,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            calibration=UncalibratedNeuronSimulator,
        )

    def parameters(self, choice: SimulatorChoice | None) -> dict[str, Any]:
        """The parameters recorded in provenance."""
        params: dict[str, Any] = {
            "n_examples_per_split": self.n_examples_per_split,
            "calibration": "none",
            "samples": self.samples,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "explainer_prompt_format": PromptFormat.HARMONY_V4.value,
            "regenerate": self.regenerate,
        }
        if choice is not None:
            params["top_logprobs"] = choice.top_logprobs
            if choice.method == SimulatorMethod.ONE_AT_A_TIME:
                chat = choice.chat_one_at_a_time and not self.compatible
                params["one_at_a_time_via"] = "chat" if chat else "completions"
        if self.compatible:
            params["compatibility"] = "original"
        if self.budget.max_tokens is not None or self.budget.max_cost is not None:
            params["budget"] = self.budget.describe()
        return params
