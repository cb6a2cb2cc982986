"""The store under a killed process, concurrent readers, corruption, locks and read-only files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neuron_desk.core.errors import StoreError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from tests.data.conftest import NEURONS
from tests.data.mirror import Faults, Mirror

PREFETCH = """
import asyncio, sys
from pathlib import Path
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from tests.data.conftest import mirror_dataset
store = Store.open(Path(sys.argv[1]))
registry = Registry(store, bundled=[])
registry.add(mirror_dataset(sys.argv[2]))
async def main():
    service = NeuronService(registry, store, http_backoff_s=0.01)
    neurons = [NeuronRef("mirror", 0, n) for n in range(6)] + [NeuronRef("mirror", 1, 0), NeuronRef("mirror", 1, 1)]
    report = await service.prefetch("mirror", neurons, concurrency=2,
                                    progress=lambda p: print(p.done, flush=True))
    await service.aclose()
    print("done", report.fetched, report.already, report.absent, report.failed, flush=True)
asyncio.run(main())
"""


def _prefetch(store_path: Path, base_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PREFETCH, str(store_path), base_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_killed_mid_prefetch_then_resumed(tmp_path: Path, layout: Path) -> None:
    faults = Faults(delay_s={f"collated-activations/0/{n}.json": 0.3 for n in range(6)})
    store_path = tmp_path / "store.sqlite3"
    with Mirror(layout, faults) as mirror:
        process = _prefetch(store_path, mirror.base_url)
        assert process.stdout is not None
        for _ in range(4):  # let a few files land, then kill it without warning
            process.stdout.readline()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

        store = Store.open(store_path)
        assert store.integrity_check() == "ok"
        partial = store.file_stats("mirror")
        assert sum(n for _, _, n, _ in partial) > 0
        for dataset, kind, layer, neuron in _rows(store_path):
            assert store.get_file(NeuronRef(dataset, layer, neuron), kind) is not None  # every row is whole
        store.close()

        process = _prefetch(store_path, mirror.base_url)
        out, _ = process.communicate(timeout=60)
    fetched, already, absent, failed = map(int, out.strip().splitlines()[-1].split()[1:])
    assert failed == 0 and already > 0
    assert fetched + already + absent == len(NEURONS) * 5
    store = Store.open(store_path)
    assert len(store.stored_neurons("mirror", "activations")) == len(NEURONS)
    store.close()


def _rows(path: Path) -> list[tuple[str, str, int, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT dataset, kind, layer, neuron FROM files").fetchall()
    finally:
        db.close()


def test_readers_while_another_process_writes(tmp_path: Path) -> None:
    store_path = tmp_path / "store.sqlite3"
    Store.open(store_path).close()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from neuron_desk.data.store import Store\n"
            "from neuron_desk.core.refs import NeuronRef\n"
            "s = Store.open(Path(sys.argv[1]))\n"
            "for i in range(300): s.put_file(NeuronRef('d', 0, i), 'activations', 'x' * 5000, 'test')\n",
            str(store_path),
        ]
    )
    reader = Store.open(store_path)
    errors: list[Exception] = []
    seen = 0

    def read() -> None:
        nonlocal seen
        while writer.poll() is None:
            try:
                seen = max(seen, len(reader.stored_neurons("d")))
                body = reader.get_file(NeuronRef("d", 0, 0), "activations")
                assert body is None or body.text == "x" * 5000
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            time.sleep(0.001)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert writer.wait(timeout=60) == 0
    assert errors == []
    assert len(reader.stored_neurons("d")) == 300
    reader.close()


def test_corrupt_store_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = Store.open(path)
    assert store.integrity_check() == "ok"
    store.close()
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")


def test_locked_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    Store.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    writer = Store.open(path, timeout_s=0.2)
    with pytest.raises(StoreError, match="locked by another neuron-desk"):
        writer.put_file(NeuronRef("d", 0, 0), "k", "x", "test")
    writer.close()
    holder.execute("ROLLBACK")
    holder.close()


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    Store.open(path).close()
    store = Store.open_read_only(path)
    with pytest.raises(StoreError, match="read-only"):
        store.put_file(NeuronRef("d", 0, 0), "k", "x", "test")
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer neuron-desk"):
        Store.open(path)


WRITER = """
import sys
from pathlib import Path
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
store = Store.open(Path(sys.argv[1]), timeout_s=30)
explanations = Explanations(store)
me = int(sys.argv[2])
for i in range(150):
    store.put_file(NeuronRef("d", me, i), "activations", f"{me}:{i}:" + "x" * 2000, "test")
    explanations.add(NeuronRef("d", me, i), f"writer {me} explanation {i}", i / 150, "generated", {"run": f"w{me}"})
store.close()
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    Store.open(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], cwd=Path(__file__).resolve().parents[2])
        for n in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    store = Store.open(path)
    assert store.integrity_check() == "ok"
    assert len(store.stored_neurons("d")) == 4 * 150
    for n in range(4):
        assert len(Explanations(store).of_run(f"w{n}")) == 150
        body = store.get_file(NeuronRef("d", n, 149), "activations")
        assert body is not None and body.text.startswith(f"{n}:149:") and len(body.text) == len(f"{n}:149:") + 2000
    assert len(Explanations(store).search("explanation")) == 50  # the search limit; the index holds them all
    store.close()
