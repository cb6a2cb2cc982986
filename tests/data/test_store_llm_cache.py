"""The response cache's two tables (schema 5): a store made before keeps its cached answers in
`llm_cache`, where they are read, counted, imported, cleared and salvaged, never copied; new
answers go to the rowid table `llm_cache_entries`. Real SQLite files, real processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from neuron_desk.data import store as store_module
from neuron_desk.data.store import Store, salvage_into
from neuron_desk.llm.answers import RawAnswer, parse_answer
from neuron_desk.llm.cache import OLD_TABLE, TABLE, ResponseCache, compress_body

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "http://e/v1"


def answer(n: int, size: int = 64) -> bytes:
    """A distinct JSON answer body (`size` bytes of random hex: hardly compressible)."""
    filler = os.urandom(size // 2).hex()
    return f'{{"id":"answer-{n}","choices":[{{"text":"{filler}"}}]}}'.encode()


def old_store(path: Path, answers: dict[str, bytes], endpoint: str = ENDPOINT) -> None:
    """A store as schema 4 made it (4 KB pages, only `llm_cache`, WITHOUT ROWID), with cached
    answers in it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size = 4096")
    db.execute("PRAGMA journal_mode=WAL")
    for version in range(1, 5):
        db.executescript(store_module._MIGRATIONS[version])
    db.execute("PRAGMA user_version = 4")
    db.executemany(
        f"INSERT INTO {OLD_TABLE} VALUES (?, ?, 'm', ?, ?)",
        [(key, endpoint, compress_body(raw), time.time()) for key, raw in answers.items()],
    )
    db.close()


def keys_in(store: Store, table: str) -> set[str]:
    return {str(key) for (key,) in store.query(f"SELECT key FROM {table}")}


def put(cache: ResponseCache, key: str, raw: bytes, endpoint: str = ENDPOINT) -> None:
    cache.put_by_key(key, endpoint, {"model": "m"}, RawAnswer(parse_answer(raw), raw))


def test_an_old_store_is_migrated_without_copying_and_its_answers_read(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old = {f"key{n}": answer(n, 300_000) for n in range(12)}  # 3.6 MB, hardly compressible
    old_store(path, old)
    store = Store.open(path)
    try:
        assert store.query("PRAGMA user_version") == [(5,)]
        wal = path.with_name(path.name + "-wal")
        # The migration wrote a new empty table, not a copy of 3.6 MB of answers.
        assert not wal.exists() or wal.stat().st_size < 200_000
        assert keys_in(store, OLD_TABLE) == set(old) and keys_in(store, TABLE) == set()
        cache = ResponseCache(store)
        for key, raw in old.items():
            assert cache.get_bytes(key) == raw
        assert cache.get_by_key("key3") == parse_answer(old["key3"])
        assert cache.count() == 12 and cache.count(ENDPOINT) == 12 and cache.count("x") == 0
        assert cache.get_bytes("nowhere") is None
    finally:
        store.close()


def test_new_answers_go_to_the_rowid_table_and_replace_an_old_copy(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old = {"old1": answer(1), "old2": answer(2)}
    old_store(path, old)
    store = Store.open(path)
    try:
        cache = ResponseCache(store)
        fresh = answer(3)
        put(cache, "new", fresh)
        assert keys_in(store, TABLE) == {"new"} and keys_in(store, OLD_TABLE) == set(old)
        # A rowid table: SQLite keeps the row's blob out of the key's b-tree.
        sql = store.query("SELECT sql FROM sqlite_master WHERE name=?", (TABLE,))[0][0]
        assert "WITHOUT ROWID" not in sql.upper()
        assert cache.get_bytes("new") == fresh
        again = answer(4)
        put(cache, "old1", again)  # the same request answered again: one entry, the new one
        assert keys_in(store, OLD_TABLE) == {"old2"}
        assert keys_in(store, TABLE) == {"new", "old1"}
        assert cache.get_bytes("old1") == again and cache.count() == 3
        assert cache.contains(ENDPOINT, "/completions", {"model": "m"}) is False
        staged = [("old2", "m", compress_body(answer(5))), ("batch", "m", compress_body(answer(6)))]
        assert cache.put_many(ENDPOINT, staged) == 1  # "old2" was cached already
        assert keys_in(store, OLD_TABLE) == set() and cache.count() == 4
    finally:
        store.close()


def test_clearing_clears_both_tables(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old_store(path, {"a": answer(1)}, endpoint="http://one/v1")
    db = sqlite3.connect(path)
    db.execute(
        f"INSERT INTO {OLD_TABLE} VALUES ('b', 'http://two/v1', 'm', ?, 0)",
        (compress_body(answer(2)),),
    )
    db.commit()
    db.close()
    store = Store.open(path)
    try:
        cache = ResponseCache(store)
        put(cache, "c", answer(3), "http://one/v1")
        put(cache, "d", answer(4), "http://two/v1")
        assert cache.clear("http://one/v1") == 2
        assert cache.get_bytes("a") is None and cache.get_bytes("c") is None
        assert cache.count() == 2
        assert cache.clear() == 2
        assert cache.count() == 0 and keys_in(store, OLD_TABLE) == keys_in(store, TABLE) == set()
    finally:
        store.close()


def test_salvage_keeps_both_tables(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old = {"old1": answer(1, 40_000), "old2": answer(2)}
    old_store(path, old)
    store = Store.open(path)
    new = {"new1": answer(3, 40_000), "new2": answer(4)}
    for key, raw in new.items():
        put(ResponseCache(store), key, raw)
    store.close()
    fresh = Store.open(tmp_path / "fresh.sqlite3")
    try:
        report = salvage_into(path, fresh)
        assert report.copied[OLD_TABLE] == 2 and report.copied[TABLE] == 2 and not report.lost
        cache = ResponseCache(fresh)
        for key, raw in {**old, **new}.items():
            assert cache.get_bytes(key) == raw
        assert cache.count() == 4
    finally:
        fresh.close()


def test_import_reads_both_tables_of_any_schema_and_keeps_one_copy(tmp_path: Path) -> None:
    other_path = tmp_path / "other.sqlite3"
    old_store(other_path, {"shared": answer(1), "theirs-old": answer(2)})
    mine = Store.open(tmp_path / "mine.sqlite3")
    try:
        # An old-schema store, opened read-only as `import-store` does: only `llm_cache`.
        other = Store.open_read_only(other_path, immutable=False)
        try:
            cache = ResponseCache(mine)
            put(cache, "shared", answer(9))
            assert cache.import_from(ResponseCache(other)) == 1
            assert cache.get_bytes("theirs-old") is not None
        finally:
            other.close()
        # The same store after this version migrated it: both tables.
        migrated = Store.open(other_path)
        put(ResponseCache(migrated), "theirs-new", answer(3))
        migrated.close()
        other = Store.open_read_only(other_path, immutable=False)
        try:
            assert ResponseCache(mine).import_from(ResponseCache(other)) == 1
        finally:
            other.close()
        assert ResponseCache(mine).count() == 3
        assert keys_in(mine, TABLE) == {"shared", "theirs-old", "theirs-new"}
    finally:
        mine.close()


def test_an_old_key_imported_into_a_store_that_has_it_in_its_old_table_is_not_doubled(
    tmp_path: Path,
) -> None:
    mine_path = tmp_path / "mine.sqlite3"
    old_store(mine_path, {"k": answer(1)})
    other = Store.open(tmp_path / "other.sqlite3")
    put(ResponseCache(other), "k", answer(2))
    mine = Store.open(mine_path)
    try:
        assert ResponseCache(mine).import_from(ResponseCache(other)) == 0
        assert ResponseCache(mine).count() == 1
    finally:
        mine.close()
        other.close()


WRITER = """
import sys
from pathlib import Path
from neuron_desk.data.store import Store
from neuron_desk.llm.cache import ResponseCache
from neuron_desk.llm.answers import RawAnswer, parse_answer
store = Store.open(Path(sys.argv[1]), timeout_s=30)
cache = ResponseCache(store)
name, count = sys.argv[2], int(sys.argv[3])
print("open", flush=True)
for n in range(count):
    raw = ('{"id":"%s-%d","choices":[{"text":"%s"}]}' % (name, n, "x" * 30000)).encode()
    cache.put_by_key(f"{name}-{n}", "http://e/v1", {"model": "m"}, RawAnswer(parse_answer(raw), raw))
if sys.argv[4:] == ["--has-old"]:
    assert cache.get_bytes("old0") is not None
print("done", cache.count(), flush=True)
store.close()
"""


def writer(path: Path, name: str, count: int, *flags: str) -> subprocess.Popen[str]:
    """Another process: opens the store (migrating it), writes `count` answers `name-n`."""
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), name, str(count), *flags],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_a_store_migrated_by_one_process_while_another_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old = {f"old{n}": answer(n, 2000) for n in range(5)}
    old_store(path, old)
    # This process opens the old store read-only (as `import-store` does) before the migration.
    reader = Store.open_read_only(path, immutable=False)
    try:
        cache = ResponseCache(reader)
        assert cache.get_bytes("old1") == old["old1"] and cache.count() == 5
        assert cache.get_bytes("w-0") is None  # before the new table exists
        process = writer(
            path, "w", 3, "--has-old"
        )  # opens it writable: migrates, writes three answers
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0 and "done 8" in out
        # The same reader, the same cache object: it sees the new table once it exists.
        assert cache.get_bytes("w-2") is not None and cache.get_bytes("old4") == old["old4"]
        assert cache.count() == 8
    finally:
        reader.close()


def test_two_processes_migrating_and_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old_store(path, {f"old{n}": answer(n, 2000) for n in range(5)})
    processes = [writer(path, name, 20, "--has-old") for name in ("a", "b")]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    store = Store.open(path)
    try:
        assert store.integrity_check() == "ok"
        assert store.query("PRAGMA user_version") == [(5,)]
        cache = ResponseCache(store)
        assert cache.count() == 45
        assert keys_in(store, OLD_TABLE) == {f"old{n}" for n in range(5)}
        assert all(cache.get_bytes(f"{name}-{n}") for name in "ab" for n in range(20))
    finally:
        store.close()


def test_a_cache_held_open_sees_another_process_clear_and_write(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old_store(path, {f"old{n}": answer(n) for n in range(5)})
    store = Store.open(path)  # migrated here, then held open
    try:
        cache = ResponseCache(store)
        put(cache, "mine", answer(7))
        clearer = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from neuron_desk.data.store import Store;"
                "from neuron_desk.llm.cache import ResponseCache;"
                "s = Store.open(Path(sys.argv[1])); print(ResponseCache(s).clear()); s.close()",
                str(path),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=True,
        )
        assert clearer.stdout.strip() == "6"
        assert cache.count() == 0 and cache.get_bytes("old1") is None
        process = writer(path, "theirs", 1)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0 and "done 1" in out
        assert cache.get_bytes("theirs-0") is not None and cache.count() == 1
    finally:
        store.close()
