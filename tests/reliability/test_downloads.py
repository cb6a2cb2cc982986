"""Downloads from a hostile mirror are bounded in bytes (after decompression) and in time, and
every failure names the URL. Small sizes here; tests/benchmarks/hostile_downloads.py runs the
same attacks at full size (2 GiB body, 1 GiB gzip bombs) and prints peak memory.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from neuron_desk.core.errors import NotFound, SourceUnavailable
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.sources import HttpSource
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
from tests.reliability.hostile import Attacks, HostileMirror, gzip_bomb
from tests.reliability.test_border import record_json

T = TypeVar("T")
MB = 1 << 20


def fetch(base_url: str, relative: str, **options: Any) -> bytes:
    async def go() -> bytes:
        async with httpx.AsyncClient(follow_redirects=True, timeout=5.0) as client:
            source = HttpSource(base_url, client, retries=0, **options)
            return await source.fetch(relative)

    return asyncio.run(asyncio.wait_for(go(), 20))


def within(seconds: float, work: Awaitable[T]) -> T:
    async def go() -> T:
        return await asyncio.wait_for(work, seconds)

    return asyncio.run(go())


def test_an_endless_body_stops_at_the_byte_cap() -> None:
    with HostileMirror(Attacks(endless={"big.json"})) as mirror:
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=r"big\.json is larger than 1,048,576 bytes"):
            fetch(mirror.base_url, "big.json", max_bytes=MB)
        assert time.monotonic() - started < 10


def test_a_gzip_bomb_is_refused_without_being_inflated_whole() -> None:
    bomb = gzip_bomb(96 * MB)
    with HostileMirror(Attacks(bombs={"bomb.json": bomb})) as mirror:
        tracemalloc.start()
        try:
            with pytest.raises(
                SourceUnavailable, match=r"bomb\.json is larger than .* \(decompressed\)"
            ):
                fetch(mirror.base_url, "bomb.json", max_bytes=MB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 24 * MB, f"peak {peak / MB:.0f} MB for a 1 MB cap"


def test_a_trickling_mirror_fails_within_the_file_time_limit() -> None:
    with HostileMirror(Attacks(trickle={"slow.json": 0.2})) as mirror:
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=r"within 1 s.*slow\.json"):
            fetch(mirror.base_url, "slow.json", file_time_s=1.0)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("attacks", "message"),
    [
        (Attacks(loop={"x.json"}), "too many redirects"),
        (Attacks(bad_gzip={"x.json"}), "cannot be decoded"),
    ],
)
def test_protocol_faults_name_the_url(attacks: Attacks, message: str) -> None:
    with HostileMirror(attacks) as mirror:
        with pytest.raises(SourceUnavailable, match=message) as caught:
            fetch(mirror.base_url, "x.json")
        assert f"{mirror.base_url}/x.json" in str(caught.value)


def service_for(mirror: HostileMirror, store: Store, **options: Any) -> NeuronService:
    registry = Registry(store, bundled=[])
    registry.add(mirror_dataset(mirror.base_url))
    return NeuronService(registry, store, http_retries=0, **options)


def test_invalid_utf8_is_replaced_and_said_once(store: Store) -> None:
    results = (
        b'{"dataclass_name": "NeuronSimulationResults", "neuron_id": {"layer_index": 0, '
        b'"neuron_index": 1}, "scored_explanations": [{"explanation": " caf\xe9 \xff", '
        b'"scored_simulation": {"scored_sequence_simulations": []}}]}\n'
    )
    attacks = Attacks(files={"explanations/0/1.jsonl": results})
    with HostileMirror(attacks) as mirror:
        service = service_for(mirror, store)

        async def go() -> Any:
            try:
                return await service.get(NeuronRef("mirror", 0, 1), Kind.EXPLANATIONS)
            finally:
                await service.aclose()

        fetched = within(10, go())
    assert fetched.value.scored_explanations[0].explanation == " caf\ufffd \ufffd"
    assert "invalid UTF-8" in fetched.repaired
    stored = store.get_file(NeuronRef("mirror", 0, 1), "explanations")
    assert stored is not None


def test_a_file_absent_before_is_asked_for_again_after_a_while(store: Store) -> None:
    attacks = Attacks()
    relative = "collated-activations/0/2.json"
    ref = NeuronRef("mirror", 0, 2)
    with HostileMirror(attacks) as mirror:
        service = service_for(mirror, store, absent_ttl_s=0.5)

        async def go() -> Any:
            try:
                with pytest.raises(NotFound):
                    await service.get(ref, Kind.ACTIVATIONS)
                attacks.files[relative] = json.dumps(record_json(0, 2)).encode()
                with pytest.raises(NotFound):  # within the while: still taken as absent
                    await service.get(ref, Kind.ACTIVATIONS)
                await asyncio.sleep(0.6)
                return await service.get(ref, Kind.ACTIVATIONS)
            finally:
                await service.aclose()

        fetched = within(10, go())
    assert fetched.origin == "network"
    assert attacks.requests.count(relative) == 2


def test_fetch_recheck_absent_asks_again_on_demand(store: Store, tmp_path: Path) -> None:
    attacks = Attacks()
    relative = "collated-activations/0/3.json"
    ref = NeuronRef("mirror", 0, 3)
    with HostileMirror(attacks) as mirror:
        service = service_for(mirror, store)

        async def go() -> tuple[int, int]:
            try:
                first = await service.prefetch("mirror", [ref], [Kind.ACTIVATIONS])
                attacks.files[relative] = json.dumps(record_json(0, 3)).encode()
                again = await service.prefetch("mirror", [ref], [Kind.ACTIVATIONS])
                forced = await service.prefetch(
                    "mirror", [ref], [Kind.ACTIVATIONS], recheck_absent=True
                )
                return first.absent + again.absent, forced.fetched
            finally:
                await service.aclose()

        absent, fetched = within(10, go())
    assert (absent, fetched) == (2, 1)
