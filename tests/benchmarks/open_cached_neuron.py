"""Time to open a cached GPT-2 XL-sized neuron: store read + decompress + parse (median of 100),
next to the bare cost of orjson-parsing the same bytes (the limit it is measured against).

Target: under 25 ms median on a 2-core machine, within 10x of bare orjson parsing.

    python tests/benchmarks/open_cached_neuron.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import gpt2_xl_sized_record

from neuron_desk.core import codec
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Kind, public_datasets
from neuron_desk.data.store import Store
from neuron_desk.data.validation import accept


def median_ms(work, repeat: int = 100) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


GPT2_XL = next(d for d in public_datasets() if d.name == "gpt2-xl")
REF = NeuronRef("gpt2-xl", 5, 131)


def main() -> None:
    text = codec.dumps(gpt2_xl_sized_record())
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "store.sqlite3")
        store.put_file(NeuronRef("gpt2-xl", 5, 131), "activations", text, "benchmark")

        def open_cached() -> None:
            stored = store.get_file(NeuronRef("gpt2-xl", 5, 131), "activations")
            assert stored is not None
            accept(Kind.ACTIVATIONS, stored.text, dataset=GPT2_XL, ref=REF, source="store")

        full = median_ms(open_cached)
        bare = median_ms(lambda: orjson.loads(text))
        read = median_ms(lambda: store.get_file(NeuronRef("gpt2-xl", 5, 131), "activations"))
        store.close()
    print(f"file size: {len(text) / 1024:.0f} KB of JSON")
    print(f"open cached neuron (read + decompress + parse + validate at the border): {full:.2f} ms median of 100")
    print(f"  of which store read + decompress: {read:.2f} ms")
    print(f"bare orjson.loads of the same bytes: {bare:.2f} ms median of 100")
    print(f"ratio: {full / bare:.1f}x the bare parse (target: under 25 ms, within 10x)")


if __name__ == "__main__":
    main()
