"""The neuron service against a mirror over real HTTP, a real SQLite store, offline mode."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from neuron_desk.core.errors import (
    CodecError,
    NeuronOutOfRange,
    NotAvailableOffline,
    NotFound,
    SourceUnavailable,
    UnknownDataset,
)
from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.desk import Desk
from tests.data.mirror import Mirror

ACT = "collated-activations/0/1.json"


def service(registry: Registry, store: Store, **kwargs: object) -> NeuronService:
    options: dict[str, object] = {"timeout_s": 5.0, "http_backoff_s": 0.01}
    options.update(kwargs)
    return NeuronService(registry, store, **options)  # type: ignore[arg-type]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_fetch_then_store(registry: Registry, store: Store, mirror: Mirror) -> None:
    async def go() -> tuple[str, str]:
        s = service(registry, store)
        try:
            first = await s.get(NeuronRef("mirror", 0, 1), Kind.ACTIVATIONS)
            second = await s.get(NeuronRef("mirror", 0, 1), Kind.ACTIVATIONS)
            assert isinstance(first.value, NeuronRecord) and first.value == second.value
            return first.origin, second.origin
        finally:
            await s.aclose()

    assert run(go()) == ("network", "store")
    assert mirror.faults.requests.count(ACT) == 1


def test_404_is_not_found_and_remembered(registry: Registry, store: Store, mirror: Mirror) -> None:
    async def go() -> None:
        s = service(registry, store)
        try:
            for _ in range(2):
                with pytest.raises(NotFound, match="has no related neurons"):
                    await s.get(NeuronRef("mirror", 0, 1), Kind.RELATED_NEURONS)
        finally:
            await s.aclose()

    run(go())
    assert mirror.faults.requests.count("related-neurons/weight-based/0/1.json") == 1


def test_500_then_success(registry: Registry, store: Store, mirror: Mirror) -> None:
    mirror.faults.fail_once[ACT] = 500
    record = run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 1))
    assert record.origin == "network"
    assert mirror.faults.requests.count(ACT) == 2


def test_slow_response_past_the_timeout(registry: Registry, store: Store, mirror: Mirror) -> None:
    mirror.faults.delay_s[ACT] = 1.5
    with pytest.raises(SourceUnavailable, match="timed out after 1 tries"):
        run(_get(service(registry, store, timeout_s=0.3, http_retries=0), Kind.ACTIVATIONS, 0, 1))
    assert store.get_file(NeuronRef("mirror", 0, 1), "activations") is None


def test_truncated_body_is_reported_and_not_stored(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    mirror.faults.truncate.add(ACT)
    with pytest.raises(CodecError, match=r"collated-activations/0/1\.json"):
        run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 1))
    assert store.get_file(NeuronRef("mirror", 0, 1), "activations") is None


def test_nan_and_no_dataclass_name(registry: Registry, store: Store, layout: Path) -> None:
    path = layout / ACT
    text = path.read_text().replace('"dataclass_name": "ActivationRecord", ', "")
    path.write_text(text.replace('"mean": 0.5', '"mean": NaN'))
    record = run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 1)).value
    assert math.isnan(record.mean)
    assert run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 1)).origin == "store"


def test_offline(registry: Registry, store: Store, mirror: Mirror) -> None:
    run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 1))
    offline = service(registry, store, offline=True)
    assert run(_get(offline, Kind.ACTIVATIONS, 0, 1)).origin == "store"
    with pytest.raises(NotAvailableOffline, match="not available offline"):
        run(_get(service(registry, store, offline=True), Kind.ACTIVATIONS, 0, 2))
    assert "collated-activations/0/2.json" not in mirror.faults.requests


def test_concurrent_requests_share_one_fetch(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    mirror.faults.delay_s[ACT] = 0.2

    async def go() -> None:
        s = service(registry, store)
        try:
            results = await asyncio.gather(
                *(s.get(NeuronRef("mirror", 0, 1), Kind.ACTIVATIONS) for _ in range(5))
            )
            assert len({id(r) for r in results}) == 1
        finally:
            await s.aclose()

    run(go())
    assert mirror.faults.requests.count(ACT) == 1


def test_cancelled_waiter_cancels_the_fetch(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    mirror.faults.delay_s[ACT] = 0.5

    async def go() -> None:
        s = service(registry, store)
        try:
            task = asyncio.ensure_future(s.get(NeuronRef("mirror", 0, 1), Kind.ACTIVATIONS))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.01)
            assert s._inflight == {}
        finally:
            await s.aclose()

    run(go())
    assert store.get_file(NeuronRef("mirror", 0, 1), "activations") is None


def test_bad_names_and_indices(registry: Registry, store: Store) -> None:
    with pytest.raises(NeuronOutOfRange, match="no layer 7"):
        run(_get(service(registry, store), Kind.ACTIVATIONS, 7, 0))
    with pytest.raises(NeuronOutOfRange, match="no neuron 8"):
        run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 8))
    with pytest.raises(UnknownDataset, match="no dataset named 'nope'"):
        run(_get(service(registry, store), Kind.ACTIVATIONS, 0, 0, dataset="nope"))


def test_neuron_collects_every_kind_and_search_finds_it(registry: Registry, store: Store) -> None:
    async def go():  # type: ignore[no-untyped-def]
        s = service(registry, store)
        try:
            return await s.neuron(NeuronRef("mirror", 0, 3))
        finally:
            await s.aclose()

    data = run(go())
    summary = Desk(store, registry, service(registry, store)).describe(data)
    assert summary["counts"] == {"top": 20, "quantiles": [], "random": 15}
    assert summary["explanations"][0]["score"] == 0.42
    assert summary["top_tokens"]["activation"] == [(" eager", 4.0)]
    assert "related-neurons" in summary["errors"]
    hits = Explanations(store).search("letter")
    assert [(h.ref, h.source) for h in hits] == [(NeuronRef("mirror", 0, 3), "published")]


def test_prefetch_progress_and_resume(registry: Registry, store: Store, mirror: Mirror) -> None:
    seen: list[int] = []

    async def go():  # type: ignore[no-untyped-def]
        s = service(registry, store)
        try:
            return await s.prefetch(
                "mirror",
                [NeuronRef("mirror", 0, n) for n in range(8)],
                [Kind.ACTIVATIONS],
                progress=lambda p: seen.append(p.done),
            )
        finally:
            await s.aclose()

    first = run(go())
    assert (first.fetched, first.absent, first.failed) == (6, 2, 0)
    assert seen[-1] == 8
    requests = len(mirror.faults.requests)
    second = run(go())
    assert (second.already, second.absent, second.fetched) == (6, 2, 0)
    assert len(mirror.faults.requests) == requests


async def _get(s: NeuronService, kind: Kind, layer: int, neuron: int, dataset: str = "mirror"):  # type: ignore[no-untyped-def]
    try:
        return await s.get(NeuronRef(dataset, layer, neuron), kind)
    finally:
        await s.aclose()
