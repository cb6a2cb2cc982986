"""The store under faults: concurrent first opens, a read-only store, a full disk, a corrupt
page. Real SQLite files, real processes; tests/benchmarks/concurrent_first_open.py runs the
first-open race at full size (20 processes, many rounds).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.store import Store
from tests.reliability.test_border import record_json

ROOT = Path(__file__).resolve().parents[2]


def _open_after(barrier: multiprocessing.synchronize.Barrier, path: str, out: str) -> None:
    barrier.wait()
    try:
        store = Store.open(Path(path))
        store.put_json("meta", f"opened-{os.getpid()}", 1)
        store.close()
        Path(out).write_text("ok")
    except Exception as exc:  # reported to the parent
        Path(out).write_text(f"{type(exc).__name__}: {exc}")


def first_opens(home: Path, processes: int) -> list[str]:
    """Open a fresh store from `processes` processes released at the same instant."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    outs = [home / f"out-{i}" for i in range(processes)]
    workers = [
        context.Process(target=_open_after, args=(barrier, str(home / "store.sqlite3"), str(o)))
        for o in outs
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return [o.read_text() if o.exists() else "no answer" for o in outs]


def test_concurrent_first_opens_of_a_fresh_store_all_succeed(tmp_path: Path) -> None:
    failures = []
    for round_ in range(4):
        home = tmp_path / f"round-{round_}"
        home.mkdir()
        failures += [r for r in first_opens(home, 10) if r != "ok"]
    assert failures == []


def _small_store(path: Path) -> None:
    store = Store.open(path)
    store.put_file(
        NeuronRef("gpt2-xl", 5, 131), "activations", json.dumps(record_json(5, 131)), "import"
    )
    store.close()


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(), reason="root")
def test_a_read_only_store_opens_read_only_for_browsing() -> None:
    outer = Path(tempfile.mkdtemp(prefix="neuron-desk-ro-"))
    os.chmod(outer, 0o755)
    home = outer / "home"
    home.mkdir()
    _small_store(home / "store.sqlite3")
    for p in [*home.iterdir(), home]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    # Stored bodies are zstd: the system Python (the other user's) gets this environment's
    # zstandard package, copied where that user may read it.
    import zstandard

    libs = outer / "libs"
    shutil.copytree(Path(zstandard.__file__).parent, libs / "zstandard")
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.append({str(libs)!r})\n"
        "from pathlib import Path\n"
        "from neuron_desk.data.store import Store\n"
        "from neuron_desk.core.refs import NeuronRef\n"
        f"s = Store.open(Path({str(home)!r}) / 'store.sqlite3')\n"
        "f = s.get_file(NeuronRef('gpt2-xl', 5, 131), 'activations')\n"
        "print(s.read_only, len(f.text) > 100)\n"
    )

    def as_nobody() -> None:  # a user who may read the store but not write it
        os.setgid(65534)
        os.setuid(65534)

    done = subprocess.run(
        ["/usr/bin/python3", "-c", code],
        capture_output=True,
        text=True,
        preexec_fn=as_nobody,
        cwd="/",
        timeout=60,
    )
    shutil.rmtree(outer)
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.split() == ["True", "True"]
    assert "opened read-only" in done.stderr


def test_show_offline_works_while_the_disk_is_full(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _small_store(home / "store.sqlite3")

    def disk_full() -> None:  # no file may grow past 4 KiB: the store, its WAL, its -shm
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-m", "neuron_desk", "show", "gpt2-xl", "5", "131", "--offline"],
        env={**os.environ, "NEURON_DESK_HOME": str(home)},
        capture_output=True,
        text=True,
        preexec_fn=disk_full,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-1000:]
    assert "gpt2-xl layer 5 neuron 131" in done.stdout and "(store)" in done.stdout


def _corrupt_a_page_of(path: Path, table: str) -> None:
    """Overwrite one leaf page in the middle of `table`'s b-tree with garbage."""
    db = sqlite3.connect(path)
    pages = [
        row[0]
        for row in db.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,),
        )
    ]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    victim = pages[len(pages) // 2]
    with path.open("r+b") as handle:
        handle.seek((victim - 1) * page_size)
        handle.write(b"\xa5" * page_size)


def test_a_store_with_a_corrupt_page_is_salvaged_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = Store.open(path)
    explanations = Explanations(store)
    for n in range(300):
        ref = NeuronRef("gpt2-xl", 1, n)
        explanations.add(ref, f" explanation number {n} " + "x" * 2000, 0.5, "user", {})
        store.put_file(ref, "activations", json.dumps({"n": n}), "import")
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _corrupt_a_page_of(path, "explanations")

    store = Store.open(path)
    try:
        assert store.salvage is not None
        assert store.integrity_check() == "ok"
        kept = Explanations(store).search("explanation")
        assert 200 <= len(store.query("SELECT id FROM explanations")) < 300
        assert kept  # the full-text index is rebuilt over what was salvaged
        assert len(store.stored_neurons("gpt2-xl")) == 300
        assert "explanations" in store.salvage.lost
        assert store.salvage.aside.exists() and store.salvage.aside != path
    finally:
        store.close()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_stored_files_past_a_corrupt_page_are_salvaged_too(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = Store.open(path)
    for n in range(300):
        body = json.dumps({"n": n, "pad": random.Random(n).randbytes(1500).hex()})
        store.put_file(NeuronRef("gpt2-xl", n % 3, n), "activations", body, "import")
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _corrupt_a_page_of(path, "files")
    store = Store.open(path)
    try:
        assert store.salvage is not None and "files" in store.salvage.lost
        assert 200 <= len(store.stored_neurons("gpt2-xl")) < 300
        assert store.stored_neurons("gpt2-xl")[-1] == NeuronRef("gpt2-xl", 2, 299)  # the tail
    finally:
        store.close()
