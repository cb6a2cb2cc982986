"""A Neuronpedia-sized import: one synthetic source export (gzip batches as Neuronpedia
publishes them), imported into a fresh home; then one latent opened offline.

Prints latents imported a second (of wall time, and of the process's CPU time, the figure to
hold on a shared machine), the peak memory of the importing process (the export is written by
another process), and the time to open an imported latent offline. Targets: 150 latents per
CPU second (a whole 24,576-latent source within 3 minutes); peak memory that does not grow
with the number of latents (the import holds one activations batch, 1,024 latents, at a time);
the offline open under 0.1 s (as for any stored neuron).

    python tests/benchmarks/import_neuronpedia.py                 # 2,048 latents
    python tests/benchmarks/import_neuronpedia.py --latents 256   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.desk import Desk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import bench

TARGET_LATENTS_PER_CPU_S = 150.0
TARGET_OPEN_S = 0.1
WORDS = [" the", " Paris", "\n", "\t", "<b>", "café", " 日本", " über", ".", ","]


def write_export(root: Path, latents: int, per_latent: int, tokens: int) -> Path:
    """A source folder in Neuronpedia's layout, 1,024 latents a batch."""
    rng = random.Random(7)
    source = root / "gpt2-small" / "9-res-jb"
    for kind in ("features", "activations", "explanations"):
        (source / kind).mkdir(parents=True)
    (source / "source.jsonl").write_text(
        json.dumps({"id": "9-res-jb", "saelensConfig": {"d_sae": latents, "d_in": 768}}) + "\n"
    )
    for batch, start in enumerate(range(0, latents, 1024)):
        indices = range(start, min(start + 1024, latents))
        features, activations, explanations = [], [], []
        for i in indices:
            base = {"modelId": "gpt2-small", "layer": "9-res-jb", "index": str(i)}
            features.append({**base, "pos_str": WORDS[:5], "pos_values": [1.0, 0.9, 0.8, 0.7, 0.6]})
            explanations.append({**base, "id": f"e{i}", "description": f" latent {i} words"})
            for _ in range(per_latent):
                values = [round(rng.random() * 10, 3) for _ in range(tokens)]
                activations.append(
                    {
                        **base,
                        "tokens": [rng.choice(WORDS) for _ in range(tokens)],
                        "values": values,
                        "maxValue": max(values),
                        "maxValueTokenIndex": values.index(max(values)),
                    }
                )
        for kind, rows in (
            ("features", features),
            ("activations", activations),
            ("explanations", explanations),
        ):
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (source / kind / f"batch-{batch}.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    return source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latents", type=int, default=2048)
    parser.add_argument("--per-latent", type=int, default=20, help="activation rows a latent")
    parser.add_argument("--tokens", type=int, default=64, help="tokens a row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # its memory is not ours
            source = pool.apply(
                write_export, (Path(tmp), args.latents, args.per_latent, args.tokens)
            )
        size = sum(p.stat().st_size for p in source.rglob("*.gz"))
        desk = Desk.open(Paths.at(Path(tmp) / "home"), bundled=[], offline=True)
        started, cpu = time.perf_counter(), time.process_time()
        report = desk.import_neuronpedia([source], name="bench")
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        rate = report.imported / cpu
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        opened = time.perf_counter()
        asyncio.run(desk.neuron(NeuronRef("bench", 0, args.latents // 2)))
        open_s = time.perf_counter() - opened
        asyncio.run(desk.aclose())
        desk.close()
    print(
        f"imported {report.imported} latents ({args.per_latent} rows x {args.tokens} tokens each, "
        f"{size / 1e6:.1f} MB gzipped) in {took:.2f} s ({cpu:.2f} s of CPU): {rate:.0f} "
        f"latents per CPU second (target {TARGET_LATENTS_PER_CPU_S:.0f}: "
        f"{rate / TARGET_LATENTS_PER_CPU_S:.2f}x); peak memory {peak_mb:.0f} MB"
    )
    print(
        f"opened an imported latent offline in {open_s * 1000:.1f} ms "
        f"(target {TARGET_OPEN_S * 1000:.0f} ms: {TARGET_OPEN_S / open_s:.2f}x)"
    )
    bench(
        "import_neuronpedia",
        "Neuronpedia import rate",
        rate,
        "latents/CPU s",
        TARGET_LATENTS_PER_CPU_S,
        minimum=True,
        note=f"{report.imported} latents, {args.per_latent} rows × {args.tokens} tokens, "
        f"{size / 1e6:.1f} MB gzipped; peak memory {peak_mb:.0f} MB",
    )
    bench(
        "import_neuronpedia",
        "open an imported latent offline",
        open_s * 1000,
        "ms",
        TARGET_OPEN_S * 1000,
    )


if __name__ == "__main__":
    main()
