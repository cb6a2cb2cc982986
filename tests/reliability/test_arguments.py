"""Arguments: a concurrency below 1 is refused everywhere (it would wait forever), and a budget
of 0 means the same in every command (refused: leave the flag out for no cap)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from neuron_desk.cli import main
from neuron_desk.core.errors import BudgetExceeded
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.llm.ledger import Budget, UsageLedger
from neuron_desk.runs.batch import BatchSpec, run_batch


def test_prefetch_refuses_a_concurrency_of_0_instead_of_hanging(store: Store) -> None:
    service = NeuronService(Registry(store, bundled=[]), store, offline=True)

    async def go() -> None:
        await asyncio.wait_for(
            service.prefetch("gpt2-xl", [NeuronRef("gpt2-xl", 0, 0)], concurrency=0), 5
        )

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(go())


def test_a_batch_refuses_a_concurrency_of_0_instead_of_hanging(store: Store) -> None:
    service = NeuronService(Registry(store, bundled=[]), store, offline=True)
    spec = BatchSpec("gpt2-xl", (NeuronRef("gpt2-xl", 0, 0),), "default")

    async def go() -> None:
        await asyncio.wait_for(run_batch(spec, service, store, None, concurrency=0), 5)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(go())


@pytest.mark.parametrize(
    "argv",
    [
        ["fetch", "gpt2-xl", "0", "0-3", "--concurrency", "0"],
        ["batch", "gpt2-xl", "--layers", "0", "--neurons", "0", "--concurrency", "0"],
        ["batch", "gpt2-xl", "--layers", "0", "--neurons", "0", "--budget-tokens", "0"],
        ["batch", "gpt2-xl", "--layers", "0", "--neurons", "0", "--budget-usd", "0"],
        ["explain", "gpt2-xl", "0", "0", "--budget-tokens", "0"],
        ["score", "gpt2-xl", "0", "0", "x", "--budget-usd", "0"],
    ],
)
def test_zero_concurrency_and_zero_budgets_are_refused_alike(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_DESK_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_a_budget_of_0_given_to_the_library_is_a_cap_of_0() -> None:
    ledger = UsageLedger(run="r", budget=Budget(max_tokens=0))
    with pytest.raises(BudgetExceeded):
        ledger.reserve("m", 1)
