"""A staged batch of N synthetic neurons (default 10,000) against the fake engine on this machine.

Measures each stage of the round trip: the export passes (requests written per second), the
fake engine answering the files through the fake OpenAI-compatible server (not neuron-desk's
time; printed for scale), the imports (output lines read into the cache per second), the last
pass finishing every neuron from the cache; then the store size per neuron and the process's
resident memory after each phase (flat: files are streamed, nothing grows with N but the store).

    python tests/benchmarks/staged_batch.py [--neurons 10000] [--examples 5]

(README's figures: `--examples 1`, 1 record to explain from and 2 to score on per neuron.)

Targets (README, Performance): export >= 100 requests/s, import >= 500 lines/s, store
<= 100 KB per neuron, resident memory growing < 50 MB from the first export to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from neuron_desk.core import codec
from neuron_desk.core.model import NeuronId
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Kind
from neuron_desk.desk import Desk
from neuron_desk.runs.batch import BatchSpec
from neuron_desk.runs.options import RunOptions
from tests.synthetic import neuron_record

NEURONS_PER_LAYER = 1000
ENGINE_URL = "http://fake-engine.invalid/v1"
"""The endpoint the job is for: only named (cache keys), never contacted by a staged job."""


def rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def synthetic_desk(home: Path, n: int) -> tuple[Desk, list[NeuronRef]]:
    """A desk over a store holding n synthetic neurons' activation records."""
    desk = Desk.open(Paths.at(home), bundled=[])
    layers = (n + NEURONS_PER_LAYER - 1) // NEURONS_PER_LAYER
    desk.registry.add(
        Dataset(
            name="synthetic",
            title="synthetic neurons (the letter e)",
            model="synthetic",
            n_layers=layers,
            n_neurons=NEURONS_PER_LAYER,
            kinds=(Kind.ACTIVATIONS,),
            tokenizer="gpt2",
            folder=str(home / "folder"),
        )
    )
    refs = [NeuronRef("synthetic", i // NEURONS_PER_LAYER, i % NEURONS_PER_LAYER) for i in range(n)]
    for ref in refs:
        record = neuron_record(seed=ref.layer * NEURONS_PER_LAYER + ref.index)
        record.neuron_id = NeuronId(ref.layer, ref.index)
        desk.store.put_file(ref, Kind.ACTIVATIONS.value, codec.dumps(record), "import")
    return desk, refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=10_000)
    parser.add_argument("--examples", type=int, default=5, help="n_examples_per_split (5)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="staged-bench-"))
    started = time.perf_counter()
    desk, refs = synthetic_desk(home, args.neurons)
    files_bytes = desk.store.size_bytes()
    print(f"{args.neurons:,} synthetic neurons stored in {time.perf_counter() - started:.1f} s")
    # The engine runs, with its fake server, in its own process: its memory is not ours.
    profile = desk.profile(None, ENGINE_URL)
    options = RunOptions.for_profile(profile, model="fake-model", method="chat")
    options.n_examples_per_split = args.examples
    spec = BatchSpec("synthetic", tuple(refs), profile.name, 1, "bench")
    requests_dir = home / "requests"
    memory = [("start", rss_mb())]
    for stage in range(4):
        run = desk.staged_run(profile, options, run_id=spec.batch_id)
        t0 = time.perf_counter()
        report, _ = asyncio.run(desk.export_requests(spec, run, requests_dir))
        export_s = time.perf_counter() - t0
        memory.append((f"export {stage + 1}", rss_mb()))
        size = sum(f.bytes for f in report.files)
        print(
            f"export {stage + 1}: {report.requests:,} requests ({report.explain.neurons:,} "
            f"to explain, {report.score.neurons:,} to score) in {len(report.files)} file(s), "
            f"{size / 1e6:.1f} MB; {report.finished_now:,} neurons finished; {export_s:.1f} s"
            + (f" = {report.requests / export_s:,.0f} requests/s" if report.requests else "")
            + (
                f"; finishing {report.finished_now / export_s:,.0f} neurons/s"
                if report.finished_now
                else ""
            )
        )
        if not report.files:
            break
        outputs = []
        t0 = time.perf_counter()
        for file in report.files:
            output = home / f"output-{stage}-{file.name}"
            subprocess.run(  # its own process: its memory is not neuron-desk's
                [sys.executable, "-m", "tests.fake_engine", "-i", str(requests_dir / file.name),
                 "-o", str(output)],
                cwd=ROOT, check=True, capture_output=True,
            )  # fmt: skip
            outputs.append(output)
        engine_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        imported = desk.import_results(outputs, profile, run_id=spec.batch_id)
        import_s = time.perf_counter() - t0
        memory.append((f"import {stage + 1}", rss_mb()))
        out_mb = sum(p.stat().st_size for p in outputs) / 1e6
        print(
            f"  fake engine: {engine_s:.1f} s; import: {imported.lines:,} lines "
            f"({out_mb:.1f} MB) in {import_s:.1f} s = {imported.lines / import_s:,.0f} lines/s"
        )
    done = len({row.ref for row in desk.explanations.of_run(spec.batch_id)})
    desk.store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    total = desk.store.size_bytes()
    print(f"done: {done:,}/{args.neurons:,} neurons in {time.perf_counter() - started:.0f} s")
    print(
        f"store: {total / 1e6:.1f} MB, {(total - files_bytes) / args.neurons / 1e3:.1f} KB per "
        "neuron for results, cached responses and usage (activation records not counted)"
    )
    print("resident memory (MB): " + ", ".join(f"{name} {mb:.0f}" for name, mb in memory))
    desk.close()


if __name__ == "__main__":
    main()
