"""The SQLite store: everything fetched, generated and cached, in one file per user.

One file (WAL mode), one connection, one migration list (`PRAGMA user_version`), every write
in a transaction, bodies compressed. The bundled sample dataset is a read-only file with the
same schema. A corrupt file is moved aside (never overwritten) and a fresh store created; a
locked, read-only or full store raises a `StoreError` that says so.

`Store` owns the connection and the file tables (`files`, `absent`) and two small key/value
tables (`datasets` for the registry, `meta`). Every other table family is owned by the module
that uses it, on this connection:

    explanations, explanations_fts   neuron_desk.data.explanations   (results, search)
    llm_cache                        neuron_desk.llm.cache           (response cache)
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuron_desk.core.errors import StoreError
from neuron_desk.core.refs import NeuronRef

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

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
}


def compress(text: str) -> bytes:
    """zlib-compressed UTF-8."""
    return zlib.compress(text.encode("utf-8"), 6)


def decompress(blob: bytes) -> str:
    """The text of a compressed body."""
    return zlib.decompress(blob).decode("utf-8")


@dataclass(frozen=True)
class StoredFile:
    """A file body as stored, with where and when it came from."""

    text: str
    origin: str
    fetched_at: float


class Store:
    """A SQLite store file; thread-safe; use `Store.open` or `Store.open_read_only`."""

    def __init__(self, connection: sqlite3.Connection, path: Path, read_only: bool) -> None:
        self._db = connection
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()

    # --- opening ---

    @classmethod
    def open(cls, path: Path, timeout_s: float = 5.0) -> Store:
        """Open (creating and migrating) a writable store; a corrupt file is moved aside.

        `timeout_s` is how long a write waits for another process's transaction to end.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return cls._open_checked(path, timeout_s)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise _store_error(exc, path) from None
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            logger.error("store %s is corrupt (%s); moved to %s", path, exc, aside)
            path.replace(aside)
            for suffix in ("-wal", "-shm"):
                sidecar = path.with_name(path.name + suffix)
                if sidecar.exists():
                    sidecar.replace(aside.with_name(aside.name + suffix))
            return cls._open_checked(path, timeout_s)

    @classmethod
    def _open_checked(cls, path: Path, timeout_s: float) -> Store:
        db = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        try:
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
    def open_read_only(cls, path: Path, *, immutable: bool = True) -> Store:
        """Open an existing store (e.g. the bundled sample) without ever writing to it.

        `immutable=False` for a store another process may have written (its WAL is read too).
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
        return cls(db, path, read_only=True)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer neuron-desk (schema {version}); "
                "update neuron-desk to open it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction() as db:
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

    def put_file(self, ref: NeuronRef, kind: str, text: str, origin: str) -> None:
        """Store a validated file body (replacing an older copy, clearing an absence)."""
        key = (ref.dataset, kind, ref.layer, ref.index)
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, compress(text), origin, time.time()),
            )
            db.execute(
                "DELETE FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?", key
            )

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
        return StoreError(f"the store {path} is corrupt: restart neuron-desk to move it aside")
    return StoreError(f"store {path}: {exc}")
