"""Stored bodies: zstd frames now, zlib streams as older versions wrote them; both read."""

from __future__ import annotations

import zlib
from pathlib import Path

from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.store import ZSTD_MAGIC, Store, compress, decompress

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
