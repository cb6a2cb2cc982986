"""The SQLite store: everything fetched, generated and cached, in one file per user.

One file (WAL mode), one connection, one migration list (`PRAGMA user_version`), every write
in a transaction, bodies compressed. The bundled sample dataset is a read-only file with the
same schema. Robustness:

- creating a store is safe when several processes open a fresh home at once (the schema
  version is read inside the migration's write transaction);
- a store that cannot be written (read-only file or folder, full disk) opens read-only for
  browsing, with a warning; writes then raise a `StoreError` that says why;
- a corrupt store is salvaged: the file is kept aside (never overwritten), a fresh store is
  created, every row that can still be read is copied into it and the rest is reported
  (`Store.salvage`);
- a locked, read-only or full store raises a `StoreError` that says so.

`Store` owns the connection and the file tables (`files`, `absent`) and two small key/value
tables (`datasets` for the registry, `meta`). Every other table family is owned by the module
that uses it, on this connection:

    explanations, explanations_fts   neuron_desk.data.explanations   (results, search)
    llm_cache_entries, llm_cache     neuron_desk.llm.cache           (response cache)
    usage                            neuron_desk.llm.ledger          (usage ledger)
    capabilities                     neuron_desk.llm.capabilities    (probe results)
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from neuron_desk.core.errors import StoreError
from neuron_desk.core.refs import NeuronRef

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 5

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE files (
        dataset TEXT NOT NULL,
        kind TEXT NOT NULL,
        layer INTEGER NOT NULL,
        neuron INTEGER NOT NULL,
        body BLOB NOT NULL,            -- zlib-compressed JSON text, as fetched
        origin TEXT NOT NULL,          -- network, folder, import, builder
        fetched_at REAL NOT NULL,
        PRIMARY KEY (dataset, kind, layer, neuron)
    ) WITHOUT ROWID;
    CREATE TABLE absent (              -- files the source answered 404 for
        dataset TEXT NOT NULL,
        kind TEXT NOT NULL,
        layer INTEGER NOT NULL,
        neuron INTEGER NOT NULL,
        checked_at REAL NOT NULL,
        PRIMARY KEY (dataset, kind, layer, neuron)
    ) WITHOUT ROWID;
    CREATE TABLE explanations (
        id INTEGER PRIMARY KEY,
        dataset TEXT NOT NULL,
        layer INTEGER NOT NULL,
        neuron INTEGER NOT NULL,
        explanation TEXT NOT NULL,
        score REAL,                    -- correlation score; NULL when undefined or unscored
        source TEXT NOT NULL,          -- published, generated, user
        provenance TEXT NOT NULL,      -- JSON: model, endpoint, method, parameters, usage, time
        result BLOB,                   -- zlib-compressed ScoredExplanation JSON
        created_at REAL NOT NULL
    );
    CREATE INDEX explanations_by_neuron ON explanations (dataset, layer, neuron);
    CREATE VIRTUAL TABLE explanations_fts USING fts5(
        explanation, content='explanations', content_rowid='id'
    );
    CREATE TRIGGER explanations_ai AFTER INSERT ON explanations BEGIN
        INSERT INTO explanations_fts(rowid, explanation) VALUES (new.id, new.explanation);
    END;
    CREATE TRIGGER explanations_ad AFTER DELETE ON explanations BEGIN
        INSERT INTO explanations_fts(explanations_fts, rowid, explanation)
        VALUES ('delete', old.id, old.explanation);
    END;
    CREATE TABLE llm_cache (
        key TEXT PRIMARY KEY,          -- sha256 of endpoint, model and the exact request body
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        response BLOB NOT NULL,        -- zlib-compressed JSON
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE capabilities (
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        data TEXT NOT NULL,            -- JSON
        probed_at REAL NOT NULL,
        PRIMARY KEY (endpoint, model)
    ) WITHOUT ROWID;
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        run TEXT,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE datasets (            -- datasets the user added (folders, mirrors)
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL             -- JSON
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2 (staged batches, prompt caching): the usage ledger records the prompt tokens a provider
    # served from its prefix cache, and which requests a staged batch answered (batch prices).
    2: """
    ALTER TABLE usage ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN batch INTEGER NOT NULL DEFAULT 0;
    """,
    # 3 (test your own text): activation records the user made from their own text, kept
    # apart from every dataset's files (which are never written by it).
    3: """
    CREATE TABLE user_records (
        id INTEGER PRIMARY KEY,
        dataset TEXT NOT NULL,
        layer INTEGER NOT NULL,
        neuron INTEGER NOT NULL,
        record TEXT NOT NULL,          -- JSON ActivationRecord: tokens, activations
        provenance TEXT NOT NULL,      -- JSON: source "your text", model, date, a score
        created_at REAL NOT NULL
    );
    CREATE INDEX user_records_by_neuron ON user_records (dataset, layer, neuron);
    """,
    # 4 (reading a stored copy once): which version of the border's rules accepted a body, so a
    # copy the current rules accepted is read back without being checked a second time.
    4: """
    ALTER TABLE files ADD COLUMN checked INTEGER NOT NULL DEFAULT 0;
    """,
    # 5 (cheaper cache writes): new LLM answers go to a rowid table. `llm_cache` is WITHOUT
    # ROWID, which keeps each ~290 KB blob inside its b-tree (a row moved up on a split is
    # copied whole); a rowid table keeps it in overflow pages: a write costs about half, a read
    # a quarter. Nothing is copied (a cache of hundreds of MB would hold the store's lock for
    # as long): `llm_cache` stays, read where its answers are, never written again
    # (`neuron_desk.llm.cache` reads both tables and clears both).
    5: """
    CREATE TABLE IF NOT EXISTS llm_cache_entries (
        key TEXT PRIMARY KEY,          -- as llm_cache's: sha256 of endpoint, path and body
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        response BLOB NOT NULL,        -- the body as sent (key blanked), zstd or zlib
        created_at REAL NOT NULL
    );
    """,
}


PAGE_SIZE = 32768
"""The page size of a new store. Its bodies are large (a cached LLM answer ~280 KB stored, a
GPT-2 XL neuron's activations ~100 KB): with 32 KB pages one is written in 9 pages, not 70,
and a commit of it costs 0.75 ms of CPU instead of 1.7 ms, a read 0.27 ms instead of 1.1 ms;
a small row's commit 0.037 ms instead of 0.021 (measured on this machine). A store made by an
older version keeps its 4 KB pages."""

COMPRESSION_LEVEL = 1
"""zstd's level 1: a 420 KB explanations file compresses in ~1 ms and a 270 KB activations
file inflates in ~0.2 ms (zlib level 1: ~3 ms and ~0.75 ms, as long as `orjson.loads` of it)."""

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""A zstd frame's first four bytes: the format marker of a body. Older bodies are zlib
streams, whose first byte is 0x?8 (deflate), never 0x28: both are read."""

_codecs = threading.local()


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """This thread's zstd (de)compressor (one object may not be used by two threads at once)."""
    made = getattr(_codecs, "zstd", None)
    if made is None:
        made = _codecs.zstd = (
            zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, write_checksum=True),
            zstandard.ZstdDecompressor(),
        )
    return made


def compress(text: str) -> bytes:
    """zstd-compressed UTF-8 (a frame, starting with `ZSTD_MAGIC`, holding its size and a
    checksum of the text that inflating verifies)."""
    return _zstd()[0].compress(text.encode("utf-8"))


def decompress(blob: bytes) -> str:
    """The text of a compressed body: zstd, or zlib as older versions stored it; StoreError if
    it does not inflate to what was stored (a damaged page, a checksum that differs)."""
    try:
        if blob[:4] == ZSTD_MAGIC:
            return _zstd()[1].decompress(blob).decode("utf-8")
        return zlib.decompress(blob).decode("utf-8")
    except (zstandard.ZstdError, zlib.error, UnicodeDecodeError) as exc:
        raise StoreError(f"a stored body is damaged ({exc})") from None


@dataclass(frozen=True)
class StoredFile:
    """A file body as stored, with where and when it came from."""

    text: str
    origin: str
    fetched_at: float


@dataclass(frozen=True)
class StoredBody:
    """A file body as stored (compressed), with where and when it came from."""

    blob: bytes
    origin: str
    fetched_at: float
    checked: int = 0
    """The version of the border's rules that accepted the body as exact (0: unknown, to be
    checked when read): `validation.accept_stored`."""

    def text(self) -> str:
        """The body's text."""
        return decompress(self.blob)


class Store:
    """A SQLite store file; thread-safe; use `Store.open` or `Store.open_read_only`."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, read_only: bool, why_read_only: str = ""
    ) -> None:
        self._db = connection
        self.path = path
        self.read_only = read_only
        self.why_read_only = why_read_only
        """Why a store meant to be written was opened read-only, or ""."""
        self.salvage: Salvage | None = None
        """What was copied and lost when this store was salvaged from a corrupt file."""
        self._checked_column: bool | None = None
        self._checked_as = 0
        """`checked` of bodies in a schema without that column (`open_read_only`)."""
        self._lock = threading.RLock()
        self._file_writes = 0
        """Writes of this connection to `files` (SQLite's data_version counts the others')."""

    # --- opening ---

    @classmethod
    def open(cls, path: Path, timeout_s: float = 5.0) -> Store:
        """Open (creating and migrating) a writable store.

        A corrupt file is salvaged into a fresh store (the original kept aside); a store that
        cannot be written is opened read-only. `timeout_s` is how long a write waits for
        another process's transaction to end.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls._open_retrying(path, timeout_s)
        except OSError as exc:
            return cls._read_only_fallback(path, exc.strerror or str(exc), exc)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                return cls._salvaged(path, timeout_s, exc)
            if _is_unwritable(exc):
                return cls._read_only_fallback(path, str(exc), exc)
            raise _store_error(exc, path) from None

    @classmethod
    def _open_retrying(cls, path: Path, timeout_s: float, attempts: int = 4) -> Store:
        """Open, trying again while other processes hold the lock (many first opens at once)."""
        for attempt in range(attempts):
            try:
                return cls._open_checked(path, timeout_s)
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if attempt == attempts - 1 or not ("locked" in text or "busy" in text):
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _read_only_fallback(cls, path: Path, why: str, exc: Exception) -> Store:
        if not path.is_file():
            raise StoreError(f"the store {path} cannot be created: {why}") from None
        try:
            db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            db.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error:
            try:  # no -shm can be made next to a WAL store: read the file as it is
                db = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro&immutable=1",
                    uri=True,
                    check_same_thread=False,
                )
                db.execute("PRAGMA user_version").fetchone()
            except sqlite3.Error:
                raise (
                    _store_error(exc, path)
                    if isinstance(exc, sqlite3.Error)
                    else StoreError(f"the store {path} cannot be opened: {why}")
                ) from None
        logger.warning("the store %s cannot be written (%s); opened read-only", path, why)
        return cls(db, path, read_only=True, why_read_only=why)

    @classmethod
    def _salvaged(cls, path: Path, timeout_s: float, exc: sqlite3.DatabaseError) -> Store:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                sidecar.replace(aside.with_name(aside.name + suffix))
        store = cls._open_checked(path, timeout_s)
        store.salvage = salvage_into(aside, store)
        logger.error(
            "store %s was corrupt (%s): kept aside as %s; %s", path, exc, aside, store.salvage
        )
        return store

    @classmethod
    def _open_checked(cls, path: Path, timeout_s: float) -> Store:
        db = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file only; others keep theirs
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check)")
            store = cls(db, path, read_only=False)
            store._migrate()
            return store
        except Exception:
            db.close()
            raise

    @classmethod
    def open_read_only(cls, path: Path, *, immutable: bool = True, checked_as: int = 0) -> Store:
        """Open an existing store (e.g. the bundled sample) without ever writing to it.

        `immutable=False` for a store another process may have written (its WAL is read too).
        `checked_as`: what its bodies' `checked` is read as where its schema has no such
        column (the bundled samples shipped with the app, whose bodies a test accepts).
        """
        if not path.is_file():
            raise StoreError(f"no store file at {path}")
        flags = "mode=ro&immutable=1" if immutable else "mode=ro"
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?{flags}", uri=True, check_same_thread=False
        )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(f"{path} was written by a newer neuron-desk (schema {version})")
        store = cls(db, path, read_only=True)
        store._checked_as = checked_as
        return store

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer neuron-desk (schema {version}); "
                "update neuron-desk to open it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction() as db:
                # Read again under the write lock: another process may have migrated meanwhile.
                if db.execute("PRAGMA user_version").fetchone()[0] >= target:
                    continue
                db.executescript_in_transaction(_MIGRATIONS[target])
                db.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    # --- transactions ---

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        if self.read_only:
            raise StoreError(f"{self.path} is read-only")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _store_error(exc, self.path) from None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only statement (for the modules that own a table family)."""
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _store_error(exc, self.path) from None

    # --- files ---

    def put_file(self, ref: NeuronRef, kind: str, text: str, origin: str, checked: int = 0) -> None:
        """Store a validated file body (replacing an older copy, clearing an absence); `checked`
        is `Accepted.checked`, the rules' version that accepted it as exact (0: unknown)."""
        self.put_compressed(ref, kind, compress(text), origin, checked)  # before the lock

    def put_compressed(
        self, ref: NeuronRef, kind: str, body: bytes, origin: str, checked: int = 0
    ) -> None:
        """`put_file` of a validated body already compressed by `compress` (e.g. in the
        process that checked it)."""
        self.put_compressed_many([(ref, kind, body, origin, checked)])

    def put_compressed_many(
        self,
        files: Iterable[tuple[NeuronRef, str, bytes, str, int]],
    ) -> None:
        """`put_compressed` of several files, (ref, kind, body, origin, checked) each, in one
        transaction (what arrived together)."""
        now = time.time()
        rows = [
            (ref.dataset, kind, ref.layer, ref.index, body, origin, now, checked)
            for ref, kind, body, origin, checked in files
        ]
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO files "
                "(dataset, kind, layer, neuron, body, origin, fetched_at, checked) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "DELETE FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                [row[:4] for row in rows],
            )
            self._file_writes += len(rows)

    def files_version(self) -> tuple[int, int]:
        """Changes whenever the stored files may have changed, by this connection or another
        process: a listing made at the same version is still true."""
        with self._lock:
            try:
                other = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise _store_error(exc, self.path) from None
            return self._file_writes, other

    def get_file(self, ref: NeuronRef, kind: str) -> StoredFile | None:
        """The stored body of a file, or None."""
        rows = self.query(
            "SELECT body, origin, fetched_at FROM files "
            "WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
            (ref.dataset, kind, ref.layer, ref.index),
        )
        if not rows:
            return None
        body, origin, fetched_at = rows[0]
        return StoredFile(decompress(body), origin, fetched_at)

    def get_files(self, ref: NeuronRef, kinds: list[str]) -> dict[str, StoredBody]:
        """The stored bodies of several kinds of one neuron's files, in one query, by kind
        (still compressed: `StoredBody.text()` inflates)."""
        if not kinds:
            return {}
        marks = ", ".join("?" * len(kinds))
        checked = "checked" if self._files_record_checks() else str(int(self._checked_as))
        rows = self.query(
            f"SELECT kind, body, origin, fetched_at, {checked} FROM files "
            f"WHERE dataset=? AND layer=? AND neuron=? AND kind IN ({marks})",
            (ref.dataset, ref.layer, ref.index, *kinds),
        )
        return {
            str(kind): StoredBody(bytes(body), origin, fetched_at, int(version))
            for kind, body, origin, fetched_at, version in rows
        }

    def _files_record_checks(self) -> bool:
        """Whether this file's `files` table has the `checked` column (a read-only store, such
        as the bundled sample, may be of an older schema)."""
        if self._checked_column is None:
            columns = {row[1] for row in self.query("PRAGMA table_info(files)")}
            self._checked_column = "checked" in columns
        return self._checked_column

    def has_file(self, ref: NeuronRef, kind: str) -> bool:
        """Whether a body of the file is stored (without reading it)."""
        return bool(
            self.query(
                "SELECT 1 FROM files WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                (ref.dataset, kind, ref.layer, ref.index),
            )
        )

    def mark_absent(self, ref: NeuronRef, kind: str) -> None:
        """Remember that the source has no such file (HTTP 404)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO absent VALUES (?, ?, ?, ?, ?)",
                (ref.dataset, kind, ref.layer, ref.index, time.time()),
            )

    def is_absent(self, ref: NeuronRef, kind: str) -> bool:
        """Whether the source was found to have no such file."""
        return bool(
            self.query(
                "SELECT 1 FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                (ref.dataset, kind, ref.layer, ref.index),
            )
        )

    def absent_since(self, ref: NeuronRef, kind: str, within_s: float) -> bool:
        """Whether the source answered 404 for the file less than `within_s` seconds ago."""
        return bool(
            self.query(
                "SELECT 1 FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=? "
                "AND checked_at > ?",
                (ref.dataset, kind, ref.layer, ref.index, time.time() - within_s),
            )
        )

    def clear_absent(self, ref: NeuronRef, kind: str) -> None:
        """Forget that the source had no such file (so it is asked again)."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                (ref.dataset, kind, ref.layer, ref.index),
            )

    def stored_neurons(
        self, dataset: str, kind: str | None = None, layer: int | None = None
    ) -> list[NeuronRef]:
        """Neurons with at least one stored file (of `kind`, in `layer`), in order."""
        sql = "SELECT DISTINCT layer, neuron FROM files WHERE dataset=?"
        params: list[Any] = [dataset]
        if kind is not None:
            sql += " AND kind=?"
            params.append(kind)
        if layer is not None:
            sql += " AND layer=?"
            params.append(layer)
        rows = self.query(sql + " ORDER BY layer, neuron", tuple(params))
        return [NeuronRef(dataset, int(a), int(b)) for a, b in rows]

    def file_stats(self, dataset: str | None = None) -> list[tuple[str, str, int, int]]:
        """(dataset, kind, file count, compressed bytes), per dataset and kind."""
        sql = "SELECT dataset, kind, COUNT(*), SUM(LENGTH(body)) FROM files"
        params: tuple[Any, ...] = ()
        if dataset is not None:
            sql += " WHERE dataset=?"
            params = (dataset,)
        return [
            (str(d), str(k), int(n), int(b or 0))
            for d, k, n, b in self.query(sql + " GROUP BY dataset, kind ORDER BY 1, 2", params)
        ]

    def clear_files(self, dataset: str | None = None) -> int:
        """Forget fetched files and absences (of one dataset); how many files."""
        with self.transaction() as db:
            where, params = ("WHERE dataset=?", (dataset,)) if dataset else ("", ())
            count = db.execute(f"DELETE FROM files {where}", params).rowcount
            db.execute(f"DELETE FROM absent {where}", params)
            self._file_writes += 1
        return int(count)

    # --- small key/value tables: datasets (the registry's), meta ---

    def get_json(self, table: str, key: str) -> Any:
        """A JSON value of `datasets` or `meta` by its key."""
        column, value = _columns(table)
        rows = self.query(f"SELECT {value} FROM {table} WHERE {column}=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def put_json(self, table: str, key: str, value: Any) -> None:
        """Store a JSON value in `datasets` or `meta`."""
        _columns(table)
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, json.dumps(value)))

    def all_json(self, table: str) -> list[tuple[str, Any]]:
        """Every (key, value) of `datasets` or `meta`, by key."""
        column, value = _columns(table)
        rows = self.query(f"SELECT {column}, {value} FROM {table} ORDER BY 1")
        return [(str(k), json.loads(v)) for k, v in rows]

    def delete_json(self, table: str, key: str) -> None:
        """Remove an entry of `datasets` or `meta`."""
        column, _ = _columns(table)
        with self.transaction() as db:
            db.execute(f"DELETE FROM {table} WHERE {column}=?", (key,))

    # --- maintenance ---

    def integrity_check(self) -> str:
        """SQLite's integrity_check verdict ("ok" when healthy)."""
        return str(self.query("PRAGMA integrity_check")[0][0])

    def size_bytes(self) -> int:
        """Size of the store file and its WAL on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


_KEYED = {"datasets": ("name", "spec"), "meta": ("key", "value")}
"""The key/value tables: (key column, value column)."""


def _columns(table: str) -> tuple[str, str]:
    if table not in _KEYED:
        raise ValueError(f"{table!r} is not a key/value table of the store")
    return _KEYED[table]


class _Tx:
    """The connection inside a transaction: execute statements, nothing else."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.execute: Callable[..., sqlite3.Cursor] = db.execute
        self.executemany: Callable[..., sqlite3.Cursor] = db.executemany

    def executescript_in_transaction(self, script: str) -> None:
        """Run each statement of a script (executescript would commit the transaction)."""
        for statement in _statements(script):
            self._db.execute(statement)


def _statements(script: str) -> list[str]:
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line.split("--", 1)[0] + ("\n" if "--" in line else "")
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _is_unwritable(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(
        words in text for words in ("readonly", "read-only", "unable to open", "full", "disk i/o")
    )


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "file is encrypted" in text


def _store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreError(f"the store {path} is locked by another neuron-desk; try again")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"the store {path} is read-only: check the file's permissions")
    if "full" in text or "disk i/o" in text:
        return StoreError(f"the store {path} could not be written: the disk is full or failing")
    if _is_corruption(exc) if isinstance(exc, sqlite3.DatabaseError) else False:
        return StoreError(f"the store {path} is corrupt: restart neuron-desk to salvage it")
    return StoreError(f"store {path}: {exc}")


@dataclass
class Salvage:
    """Rows copied from a corrupt store into a fresh one, and rows that could not be read."""

    aside: Path
    copied: dict[str, int]
    lost: dict[str, str]
    """Per table that lost rows, what was lost (e.g. "rows after rowid 41 unreadable")."""

    def __str__(self) -> str:
        copied = ", ".join(f"{n} {table}" for table, n in self.copied.items() if n)
        lost = "; ".join(f"{table}: {what}" for table, what in self.lost.items())
        return f"salvaged {copied or 'nothing'}" + (f"; lost {lost}" if lost else "; lost nothing")


_SALVAGED_TABLES = (
    "files",
    "absent",
    "explanations",
    "llm_cache",
    "llm_cache_entries",
    "capabilities",
    "usage",
    "datasets",
    "meta",
)
_ROWID_TABLES = frozenset({"explanations", "usage", "llm_cache_entries"})
_NOT_SALVAGED = frozenset({("files", "checked")})
"""Columns left at their default when salvaging: a body copied out of a corrupt file is checked
again at the border when it is read."""
_SALVAGE_SKIPS = (1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384, 65536)
"""How far past an unreadable row salvage seeks for the next readable one (rowid or neuron)."""


def salvage_into(corrupt: Path, fresh: Store) -> Salvage:
    """Copy every readable row of the store file `corrupt` into the empty store `fresh`."""
    report = Salvage(corrupt, {}, {})
    try:
        src = sqlite3.connect(f"{corrupt.resolve().as_uri()}?mode=ro", uri=True)
        tables = {row[0] for row in src.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        report.lost["everything"] = f"the schema is unreadable ({exc})"
        return report
    try:
        for table in _SALVAGED_TABLES:
            if table not in tables:
                continue
            kept = {row[1] for row in src.execute(f"PRAGMA table_info({table})")}
            columns = [
                row[1]
                for row in fresh.query(f"PRAGMA table_info({table})")
                if row[1] in kept and (table, row[1]) not in _NOT_SALVAGED
            ]
            reader = _rowid_rows if table in _ROWID_TABLES else _keyed_rows
            rows, lost = reader(src, table, columns)
            with fresh.transaction() as db:
                db.execute(f"DELETE FROM {table}")
                marks = ", ".join("?" * len(columns))
                cols = ", ".join(columns)
                for row in rows:
                    db.execute(f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})", row)
            report.copied[table] = len(rows)
            if lost:
                report.lost[table] = lost
    finally:
        src.close()
    return report


def _rowid_rows(
    src: sqlite3.Connection, table: str, columns: list[str]
) -> tuple[list[tuple[Any, ...]], str]:
    """Rows in rowid order; an unreadable stretch is skipped by seeking further on."""
    rows: list[tuple[Any, ...]] = []
    skipped: list[str] = []
    after = -1
    sql = f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rowid > ? ORDER BY rowid"
    while True:
        try:
            for row in src.execute(sql, (after,)):
                rows.append(tuple(row[1:]))
                after = row[0]
            return rows, ", ".join(skipped)
        except sqlite3.DatabaseError:
            for skip in _SALVAGE_SKIPS:
                try:
                    src.execute(sql + " LIMIT 1", (after + skip,)).fetchall()
                except sqlite3.DatabaseError:
                    continue
                skipped.append(f"rowids {after + 1}-{after + skip} unreadable")
                after += skip
                break
            else:
                skipped.append(f"rows after rowid {after} unreadable")
                return rows, ", ".join(skipped)


def _keyed_rows(
    src: sqlite3.Connection, table: str, columns: list[str]
) -> tuple[list[tuple[Any, ...]], str]:
    """Rows of a table without rowid; on a read error, whatever can be had row by row."""
    rows: list[tuple[Any, ...]] = []
    try:
        for row in src.execute(f"SELECT {', '.join(columns)} FROM {table}"):
            rows.append(tuple(row))
        return rows, ""
    except sqlite3.DatabaseError:
        pass
    if table not in ("files", "absent"):
        return rows, f"rows after the first {len(rows)} unreadable"
    return _files_by_layer(src, table, columns)


def _files_by_layer(
    src: sqlite3.Connection, table: str, columns: list[str]
) -> tuple[list[tuple[Any, ...]], str]:
    """Rows of `files`/`absent` in key order, seeking past unreadable stretches: further on in
    the layer, then the next layer, kind or dataset."""
    rows: list[tuple[Any, ...]] = []
    skipped = 0
    key: tuple[Any, ...] = ("", "", -1, -1)
    far = 2**62
    while True:
        try:
            for row in _keyed_after(src, table, columns, key):
                rows.append(tuple(row))
                key = tuple(row[:4])
            return rows, f"{skipped} unreadable stretch(es) skipped" if skipped else ""
        except sqlite3.DatabaseError:
            skipped += 1
        d, k, layer, neuron = key
        candidates = [(d, k, layer, neuron + skip) for skip in _SALVAGE_SKIPS]
        candidates += [(d, k, layer, far), (d, k, far, far), (d, "\U0010ffff", far, far)]
        for candidate in candidates:
            try:
                if next(iter(_keyed_after(src, table, columns, candidate)), None) is None:
                    continue  # nothing readable past it this way
            except sqlite3.DatabaseError:
                continue
            key = candidate
            break
        else:
            tail = _keyed_from_the_end(src, table, columns, key)
            lost = (
                f"rows between {key} and {tuple(tail[-1][:4])} unreadable"
                if tail
                else (f"rows after {key} unreadable")
            )
            return rows + tail, lost


def _keyed_from_the_end(
    src: sqlite3.Connection, table: str, columns: list[str], after: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """Rows read backwards from the end of the table, down to `after` or the first error."""
    tail: list[tuple[Any, ...]] = []
    sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY dataset DESC, kind DESC, "
    sql += "layer DESC, neuron DESC"
    try:
        for row in src.execute(sql):
            if tuple(row[:4]) <= after:
                break
            tail.append(tuple(row))
    except sqlite3.DatabaseError:
        pass
    return tail


def _keyed_after(
    src: sqlite3.Connection, table: str, columns: list[str], key: tuple[Any, ...]
) -> Iterator[tuple[Any, ...]]:
    """Rows after `key` (dataset, kind, layer, neuron) in key order, by prefix seeks."""
    d, k, layer, neuron = key
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE "
    order = " ORDER BY dataset, kind, layer, neuron"
    for where, params in (
        ("dataset = ? AND kind = ? AND layer = ? AND neuron > ?", (d, k, layer, neuron)),
        ("dataset = ? AND kind = ? AND layer > ?", (d, k, layer)),
        ("dataset = ? AND kind > ?", (d, k)),
        ("dataset > ?", (d,)),
    ):
        yield from src.execute(sql + where + order, params)
