"""Stored bodies: zstd frames now, zlib streams as older versions wrote them; both read."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.store import PAGE_SIZE, ZSTD_MAGIC, Store, compress, decompress

REF = NeuronRef("gpt2-small", 3, 7)
TEXT = '{"tokens": ["caf\u00e9", " \u2192", "\\n"], "activations": [0.5, 1.0, 0.0]}\n' * 200


def test_new_bodies_are_zstd_frames_and_smaller_than_the_text() -> None:
    blob = compress(TEXT)
    assert blob[:4] == ZSTD_MAGIC
    assert len(blob) < len(TEXT.encode()) / 10
    assert decompress(blob) == TEXT


def test_a_zlib_body_of_an_older_version_is_read(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store.sqlite3")
    store.put_file(REF, "activations", "placeholder", "network")
    with store.transaction() as db:  # as an older version stored it: zlib, level 6
        db.execute(
            "UPDATE files SET body=? WHERE dataset=? AND layer=? AND neuron=?",
            (zlib.compress(TEXT.encode(), 6), REF.dataset, REF.layer, REF.index),
        )
    stored = store.get_file(REF, "activations")
    assert stored is not None and stored.text == TEXT
    store.close()


def test_a_stored_body_is_written_as_zstd_and_read_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store.sqlite3")
    store.put_file(REF, "activations", TEXT, "network")
    (blob,) = store.query("SELECT body FROM files")[0]
    assert bytes(blob[:4]) == ZSTD_MAGIC
    stored = store.get_file(REF, "activations")
    assert stored is not None and stored.text == TEXT
    store.close()


def test_bodies_are_read_by_other_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [TEXT + str(i) for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(compress, texts))
        assert list(pool.map(decompress, blobs)) == texts


def test_a_new_store_has_large_pages_and_an_older_one_keeps_its_own(tmp_path: Path) -> None:
    new = Store.open(tmp_path / "new.sqlite3")
    assert new.query("PRAGMA page_size")[0][0] == PAGE_SIZE
    new.close()
    older = tmp_path / "older.sqlite3"
    db = sqlite3.connect(older)  # as an older version made it: 4 KB pages, WAL
    db.execute("PRAGMA page_size = 4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE placeholder (x)")
    db.commit()
    db.close()
    store = Store.open(older)
    assert store.query("PRAGMA page_size")[0][0] == 4096
    store.put_file(NeuronRef("d", 0, 1), "activations", "x" * 300_000, "network")
    stored = store.get_file(NeuronRef("d", 0, 1), "activations")
    assert stored is not None and stored.text == "x" * 300_000
    store.close()
