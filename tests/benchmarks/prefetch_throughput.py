"""Prefetch throughput (neurons/s) from a local HTTP mirror on 127.0.0.1 (all five kinds).

The bare limit printed next to it: the same files fetched with httpx without validation or
storing, at the same concurrency.

    python tests/benchmarks/prefetch_throughput.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the repository root
sys.path.insert(0, str(ROOT))
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Faults, Mirror, write_public_layout

N_NEURONS = 8


async def bare(base_url: str, paths: list[str], concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient() as client:

        async def get(path: str) -> None:
            async with semaphore:
                await client.get(f"{base_url}/{path}")

        start = time.perf_counter()
        await asyncio.gather(*(get(p) for p in paths))
        return time.perf_counter() - start


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "public"
        neurons = [(0, n) for n in range(N_NEURONS)] + [(1, n) for n in range(N_NEURONS)]
        write_public_layout(root, neurons)
        with Mirror(root, Faults()) as mirror:
            store = Store.open(Path(folder) / "store.sqlite3")
            registry = Registry(store, bundled=[])
            registry.add(mirror_dataset(mirror.base_url))
            service = NeuronService(registry, store)
            start = time.perf_counter()
            refs = [NeuronRef("mirror", layer, n) for layer, n in neurons]
            report = await service.prefetch("mirror", refs, concurrency=8)
            elapsed = time.perf_counter() - start
            await service.aclose()
            store.close()
            paths = [k.relative_path(layer, n) for layer, n in neurons for k in Kind]
            limit = await bare(mirror.base_url, paths, 8)
    print(
        f"prefetch: {len(neurons)} neurons x 5 kinds ({report.fetched} files, {report.absent} absent)"
    )
    print(f"  {len(neurons) / elapsed:.1f} neurons/s ({elapsed:.2f} s)")
    print(
        f"bare httpx GETs of the same paths: {len(neurons) / limit:.1f} neurons/s ({limit:.2f} s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
