"""Opening a cached GPT-2 XL neuron as the app does, against bare `orjson.loads` of the same
bytes (issue 12: within 2×).

The neuron is in the real files' shape and size (`_gpt2_xl.py`: activations ~270 KB, the
published explanation ~420 KB with its simulations, related neurons, top tokens), in a real
SQLite store, stored as a fetch stores it (accepted, kept with the rules' version that accepted
it). "As the app does": `NeuronService.get` on an asyncio loop (store read, zstd inflate and its
checksum, parse, build; a copy the current rules accepted is not checked a second time, see
`validation.accept_stored`), for the activations alone and for
all five kinds at once (`NeuronService.neuron`). The bare limit: `orjson.loads` of each
file's decompressed bytes (for five kinds: their sum). Medians of 100, taken in turn.

    python tests/benchmarks/open_cached_neuron.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import bench, median
from _gpt2_xl import neuron_files, store_as_fetched

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import Fetched, NeuronService
from neuron_desk.data.store import Store, compress, decompress
from neuron_desk.data.validation import RULES_VERSION, accept, accept_stored

NAME = "open_cached_neuron"
REF = NeuronRef("gpt2-xl", 5, 131)
REPEAT = 100


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    files = neuron_files(REF.layer, REF.index)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "store.sqlite3")
        registry = Registry(store, bundled=[])
        dataset = registry.get(REF.dataset)
        store_as_fetched(store, dataset, REF, files)
        service = NeuronService(registry, store, offline=True)
        loop = asyncio.new_event_loop()

        def open_activations() -> None:
            fetched = loop.run_until_complete(service.get(REF, Kind.ACTIVATIONS))
            assert fetched.origin == "store"

        def open_all() -> None:
            data = loop.run_until_complete(service.neuron(REF))
            assert all(isinstance(data.of_kind(k), Fetched) for k in Kind), data.errors()

        blobs = {kind: compress(text) for kind, text in files.items()}
        text = files[Kind.ACTIVATIONS]
        series: dict[str, Callable[[], object]] = {
            "app: activations": open_activations,
            "app: five kinds": open_all,
            "bare: activations": lambda: orjson.loads(text),
            "bare: five kinds": lambda: [orjson.loads(t) for t in files.values()],
            "read + inflate": lambda: store.get_file(REF, "activations"),
            "inflate alone": lambda: decompress(blobs[Kind.ACTIVATIONS]),
            "parse + check": lambda: accept(
                Kind.ACTIVATIONS, text, dataset=dataset, ref=REF, source="benchmark"
            ),
            "parse + build of a stored copy": lambda: accept_stored(
                Kind.ACTIVATIONS,
                text,
                dataset=dataset,
                ref=REF,
                source="benchmark",
                checked=RULES_VERSION,
            ),
        }
        for work in series.values():
            work()
        times: dict[str, list[float]] = {name: [] for name in series}
        for _ in range(REPEAT):
            for name, work in series.items():
                times[name].append(timed(work))
        loop.run_until_complete(service.aclose())
        loop.close()
        store.close()
    ms = {name: median(values) for name, values in times.items()}
    sizes = ", ".join(f"{k.value} {len(t) / 1024:.0f} KB" for k, t in files.items())
    print(f"files: {sizes}")
    for name, value in ms.items():
        print(f"{name}: {value:.3f} ms median of {REPEAT}")
    bench(
        NAME,
        "open a cached GPT-2 XL neuron's activations as the app does",
        ms["app: activations"] / ms["bare: activations"],
        "×orjson.loads",
        2,
        note=(
            f"{ms['app: activations']:.2f} ms vs orjson.loads {ms['bare: activations']:.2f} ms "
            f"of the same {len(text) / 1024:.0f} KB; of which store read + zstd inflate "
            f"{ms['read + inflate']:.2f} ms (inflate alone {ms['inflate alone']:.2f} ms; stored "
            f"{len(blobs[Kind.ACTIVATIONS]) / 1024:.0f} KB, ratio {len(text.encode()) / len(blobs[Kind.ACTIVATIONS]):.1f}), parse + build of the stored copy "
            f"{ms['parse + build of a stored copy']:.2f} ms (parse + build + check, as when it "
            f"came in: {ms['parse + check']:.2f} ms); "
            f"medians of {REPEAT}"
        ),
    )
    bench(
        NAME,
        "open a cached GPT-2 XL neuron, all five kinds, as the app does",
        ms["app: five kinds"] / ms["bare: five kinds"],
        "×orjson.loads",
        2,
        note=(
            f"{ms['app: five kinds']:.2f} ms vs orjson.loads of the five files "
            f"{ms['bare: five kinds']:.2f} ms; medians of {REPEAT}"
        ),
    )


if __name__ == "__main__":
    main()
