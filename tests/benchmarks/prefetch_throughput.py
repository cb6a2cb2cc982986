"""Prefetch throughput (neurons/s) from an HTTP mirror of real-size files, next to bare GETs.

    python tests/benchmarks/prefetch_throughput.py [--neurons 48] [--latency 0.1]

The mirror (tests/data/mirror.py, in its own process: its CPU is not the client's) serves the
public layout over HTTP/1.1 keep-alive with a normal listen backlog, answering each request
after `latency` seconds (a remote host; 100 ms as the network dataset in issue 12). Activation
files are GPT-2 XL-shaped (50 top, 50 random and 5 x 20 quantile records of 64 tokens, ~240 KB,
the size of a real collated-activations file), with explanations and top tokens beside them;
the fifth kind is absent (404), as for many public neurons. Prefetch (`NeuronService.prefetch`:
fetch, validate, store in SQLite) is timed against bare httpx GETs of the same paths at the
same concurrency (8), without validation or storing, in the same run.

Target (issue 12): prefetch within 0.8 of bare GETs (figure = bare time / prefetch time).
The same is printed without latency (loopback, CPU-bound) for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the repository root
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
from _synthetic import gpt2_xl_sized_record

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
from tests.data.mirror import Faults, Mirror, write_public_layout

CONCURRENCY = 8
TARGET = 0.8


def serve(root: str, latency: float, pipe: Connection) -> None:
    """The mirror, in its own process: sends its base URL, stops when told."""
    with Mirror(Path(root), Faults(latency_s=latency), keep_alive=True) as mirror:
        pipe.send(mirror.base_url)
        pipe.recv()


async def bare(base_url: str, paths: list[str]) -> float:
    """Seconds for plain GETs of `paths`, CONCURRENCY at a time, bodies read and dropped."""
    semaphore = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:

        async def get(path: str) -> None:
            async with semaphore:
                response = await client.get(f"{base_url}/{path}")
                assert response.status_code in (200, 404), response.status_code

        start = time.perf_counter()
        await asyncio.gather(*(get(p) for p in paths))
        return time.perf_counter() - start


async def prefetch(base_url: str, folder: Path, neurons: list[tuple[int, int]]) -> tuple[float, str]:
    """Seconds for prefetching every kind of `neurons` into a fresh store, and the counts."""
    store = Store.open(folder / "store.sqlite3")
    registry = Registry(store, bundled=[])
    per_layer = max(n for _layer, n in neurons) + 1
    registry.add(dataclasses.replace(mirror_dataset(base_url), n_neurons=per_layer))
    service = NeuronService(registry, store)
    refs = [NeuronRef("mirror", layer, n) for layer, n in neurons]
    start = time.perf_counter()
    report = await service.prefetch("mirror", refs, concurrency=CONCURRENCY)
    elapsed = time.perf_counter() - start
    await service.aclose()
    store.close()
    assert report.failed == 0, report.errors[:3]
    return elapsed, f"{report.fetched} files fetched, {report.absent} absent"


def measure(root: Path, folder: Path, neurons: list[tuple[int, int]], latency: float) -> dict[str, float | str]:
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=serve, args=(str(root), latency, theirs), daemon=True)
    child.start()
    base_url = ours.recv()
    try:
        paths = [k.relative_path(layer, n) for layer, n in neurons for k in Kind]
        asyncio.run(bare(base_url, paths[:CONCURRENCY]))  # the mirror warmed up
        bare_s = asyncio.run(bare(base_url, paths))
        fetched_s, counts = asyncio.run(prefetch(base_url, folder, neurons))
    finally:
        ours.send("stop")
        child.join(10)
    return {"bare": bare_s, "prefetch": fetched_s, "counts": counts, "files": len(paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neurons", type=int, default=48, help="neurons (two layers)")
    parser.add_argument("--latency", type=float, default=0.1, help="mirror latency, seconds")
    args = parser.parse_args()
    half = args.neurons // 2
    neurons = [(0, n) for n in range(half)] + [(1, n) for n in range(args.neurons - half)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "public"
        write_public_layout(root, neurons, lambda layer, n: gpt2_xl_sized_record(layer, n, seed=n))
        size = (root / Kind.ACTIVATIONS.relative_path(0, 0)).stat().st_size
        print(f"load {os.getloadavg()[0]:.2f}; activation file {size / 1e3:.0f} KB")
        results = {}
        for latency in (args.latency, 0.0):
            folder = Path(tmp) / f"run-{latency}"
            folder.mkdir()
            results[latency] = r = measure(root, folder, neurons, latency)
            print(
                f"mirror latency {latency * 1000:.0f} ms: prefetch {len(neurons) / r['prefetch']:.1f} "
                f"neurons/s ({r['prefetch']:.2f} s; {r['counts']}), bare GETs "
                f"{len(neurons) / r['bare']:.1f} neurons/s ({r['bare']:.2f} s for {r['files']} "
                f"GETs); ratio {r['bare'] / r['prefetch']:.2f}",
                flush=True,
            )
    r = results[args.latency]
    ratio = r["bare"] / r["prefetch"]
    line = {
        "benchmark": "prefetch_throughput",
        "target": f"prefetch >= {TARGET} of bare GETs (mirror at {args.latency * 1000:.0f} ms)",
        "figure": round(ratio, 3),
        "unit": "×bare GETs",
        "limit": TARGET,
        "limit_kind": "min",
        "ratio": round(ratio / TARGET, 3),
        "ok": ratio >= TARGET,
        "note": (
            f"{len(neurons)} GPT-2 XL-shaped neurons x 5 kinds ({size / 1e3:.0f} KB activation "
            f"files), concurrency {CONCURRENCY}: prefetch {r['prefetch']:.2f} s, bare GETs "
            f"{r['bare']:.2f} s; without latency {results[0.0]['bare'] / results[0.0]['prefetch']:.2f}"
            " (CPU-bound)"
        ),
    }
    print("BENCH " + json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
