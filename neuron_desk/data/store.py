"""The SQLite store: everything fetched, generated and cached, in one file per user.

One file (WAL mode), migrated by `PRAGMA user_version`, every write in a transaction, file
bodies compressed. The bundled sample dataset is a read-only file with the same schema.
A corrupt file is moved aside (never overwritten) and a fresh store created; a locked,
read-only or full store raises a `StoreError` that says so.
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

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

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


@dataclass(frozen=True)
class ExplanationRow:
    """One stored explanation (published, generated or written by the user)."""

    id: int
    dataset: str
    layer: int
    neuron: int
    explanation: str
    score: float | None
    source: str
    provenance: dict[str, Any]
    created_at: float


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
    def open_read_only(cls, path: Path) -> Store:
        """Open an existing store (e.g. the bundled sample) without ever writing to it."""
        if not path.is_file():
            raise StoreError(f"no store file at {path}")
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False
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

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _store_error(exc, self.path) from None

    # --- files ---

    def put_file(
        self, dataset: str, kind: str, layer: int, neuron: int, text: str, origin: str
    ) -> None:
        """Store a validated file body (replacing an older copy, clearing an absence)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (dataset, kind, layer, neuron, compress(text), origin, time.time()),
            )
            db.execute(
                "DELETE FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                (dataset, kind, layer, neuron),
            )

    def get_file(self, dataset: str, kind: str, layer: int, neuron: int) -> StoredFile | None:
        """The stored body of a file, or None."""
        rows = self._query(
            "SELECT body, origin, fetched_at FROM files "
            "WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
            (dataset, kind, layer, neuron),
        )
        if not rows:
            return None
        body, origin, fetched_at = rows[0]
        return StoredFile(decompress(body), origin, fetched_at)

    def mark_absent(self, dataset: str, kind: str, layer: int, neuron: int) -> None:
        """Remember that the source has no such file (HTTP 404)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO absent VALUES (?, ?, ?, ?, ?)",
                (dataset, kind, layer, neuron, time.time()),
            )

    def is_absent(self, dataset: str, kind: str, layer: int, neuron: int) -> bool:
        """Whether the source was found to have no such file."""
        return bool(
            self._query(
                "SELECT 1 FROM absent WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
                (dataset, kind, layer, neuron),
            )
        )

    def stored_neurons(
        self, dataset: str, kind: str | None = None, layer: int | None = None
    ) -> list[tuple[int, int]]:
        """(layer, neuron) pairs with at least one stored file (of `kind`, in `layer`)."""
        sql = "SELECT DISTINCT layer, neuron FROM files WHERE dataset=?"
        params: list[Any] = [dataset]
        if kind is not None:
            sql += " AND kind=?"
            params.append(kind)
        if layer is not None:
            sql += " AND layer=?"
            params.append(layer)
        return [
            (int(a), int(b)) for a, b in self._query(sql + " ORDER BY layer, neuron", tuple(params))
        ]

    def file_stats(self, dataset: str | None = None) -> list[tuple[str, str, int, int]]:
        """(dataset, kind, file count, compressed bytes), per dataset and kind."""
        sql = "SELECT dataset, kind, COUNT(*), SUM(LENGTH(body)) FROM files"
        params: tuple[Any, ...] = ()
        if dataset is not None:
            sql += " WHERE dataset=?"
            params = (dataset,)
        return [
            (str(d), str(k), int(n), int(b or 0))
            for d, k, n, b in self._query(sql + " GROUP BY dataset, kind ORDER BY 1, 2", params)
        ]

    def clear_files(self, dataset: str | None = None) -> int:
        """Forget fetched files (of one dataset); generated explanations are kept."""
        with self.transaction() as db:
            where, params = ("WHERE dataset=?", (dataset,)) if dataset else ("", ())
            count = db.execute(f"DELETE FROM files {where}", params).rowcount
            db.execute(f"DELETE FROM absent {where}", params)
            published = f"{where} AND" if where else "WHERE"
            db.execute(f"DELETE FROM explanations {published} source='published'", params)
        return int(count)

    # --- explanations ---

    def add_explanation(
        self,
        dataset: str,
        layer: int,
        neuron: int,
        explanation: str,
        score: float | None,
        source: str,
        provenance: dict[str, Any],
        result_json: str | None = None,
    ) -> int:
        """Store an explanation at once (with its scoring result and provenance); its id."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO explanations (dataset, layer, neuron, explanation, score, source, "
                "provenance, result, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    layer,
                    neuron,
                    explanation,
                    score,
                    source,
                    json.dumps(provenance),
                    compress(result_json) if result_json is not None else None,
                    time.time(),
                ),
            )
            return int(cursor.lastrowid or 0)

    def replace_published(
        self, dataset: str, layer: int, neuron: int, rows: list[tuple[str, float | None]]
    ) -> None:
        """Index a neuron's published explanations for search (replacing earlier ones)."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM explanations WHERE dataset=? AND layer=? AND neuron=? "
                "AND source='published'",
                (dataset, layer, neuron),
            )
            for text, score in rows:
                db.execute(
                    "INSERT INTO explanations (dataset, layer, neuron, explanation, score, source, "
                    "provenance, result, created_at) VALUES (?, ?, ?, ?, ?, 'published', '{}', "
                    "NULL, ?)",
                    (dataset, layer, neuron, text, score, time.time()),
                )

    def explanations(
        self, dataset: str, layer: int, neuron: int, source: str | None = None
    ) -> list[ExplanationRow]:
        """Stored explanations of a neuron, newest first."""
        sql = (
            "SELECT id, dataset, layer, neuron, explanation, score, source, provenance, created_at "
            "FROM explanations WHERE dataset=? AND layer=? AND neuron=?"
        )
        params: tuple[Any, ...] = (dataset, layer, neuron)
        if source is not None:
            sql += " AND source=?"
            params += (source,)
        return [_row(r) for r in self._query(sql + " ORDER BY created_at DESC, id DESC", params)]

    def neurons_with_explanations(
        self, dataset: str, exclude_source: str | None = None
    ) -> list[tuple[int, int]]:
        """(layer, neuron) pairs with stored explanations (other than `exclude_source`)."""
        sql = "SELECT DISTINCT layer, neuron FROM explanations WHERE dataset=?"
        params: tuple[Any, ...] = (dataset,)
        if exclude_source is not None:
            sql += " AND source != ?"
            params += (exclude_source,)
        return [(int(a), int(b)) for a, b in self._query(sql + " ORDER BY layer, neuron", params)]

    def explanations_of_run(self, run: str) -> list[ExplanationRow]:
        """Explanations whose provenance names `run` (a batch or an app run), oldest first."""
        sql = (
            "SELECT id, dataset, layer, neuron, explanation, score, source, provenance, created_at "
            "FROM explanations WHERE json_extract(provenance, '$.run') = ? ORDER BY id"
        )
        return [_row(r) for r in self._query(sql, (run,))]

    def best_generated(self, dataset: str) -> list[ExplanationRow]:
        """The best-scoring generated or user explanation of every neuron of `dataset`."""
        sql = (
            "SELECT id, dataset, layer, neuron, explanation, MAX(COALESCE(score, -2)), source, "
            "provenance, created_at FROM explanations WHERE dataset = ? AND source != 'published' "
            "GROUP BY layer, neuron ORDER BY layer, neuron"
        )
        rows = [_row(r) for r in self._query(sql, (dataset,))]
        return [r if r.score != -2 else _without_score(r) for r in rows]

    def explanation_result(self, explanation_id: int) -> str | None:
        """The stored ScoredExplanation JSON of an explanation, if it was scored."""
        rows = self._query("SELECT result FROM explanations WHERE id=?", (explanation_id,))
        return decompress(rows[0][0]) if rows and rows[0][0] is not None else None

    def search(
        self, text: str, dataset: str | None = None, limit: int = 50
    ) -> list[ExplanationRow]:
        """Explanations matching `text` (full-text, every word must appear), best first."""
        words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
        if not words:
            return []
        query = " ".join(f'"{w}"' for w in words)
        sql = (
            "SELECT e.id, e.dataset, e.layer, e.neuron, e.explanation, e.score, e.source, "
            "e.provenance, e.created_at FROM explanations_fts f JOIN explanations e "
            "ON e.id = f.rowid WHERE explanations_fts MATCH ?"
        )
        params: tuple[Any, ...] = (query,)
        if dataset is not None:
            sql += " AND e.dataset=?"
            params += (dataset,)
        sql += " ORDER BY rank LIMIT ?"
        return [_row(r) for r in self._query(sql, (*params, limit))]

    # --- small key/value tables for other layers ---

    def get_json(self, table: str, key: tuple[str, ...]) -> Any:
        """A JSON value from `capabilities`, `datasets` or `meta` by its key columns."""
        sql, _ = _KEYED[table]
        rows = self._query(sql, key)
        return json.loads(rows[0][0]) if rows else None

    def put_json(self, table: str, key: tuple[str, ...], value: Any) -> None:
        """Store a JSON value in `capabilities`, `datasets` or `meta`."""
        _, sql = _KEYED[table]
        with self.transaction() as db:
            db.execute(
                sql, (*key, json.dumps(value), *((time.time(),) if table == "capabilities" else ()))
            )

    def all_json(self, table: str) -> list[tuple[str, Any]]:
        """Every (first key, value) of `datasets` or `meta`."""
        column = {"datasets": ("name", "spec"), "meta": ("key", "value")}[table]
        rows = self._query(f"SELECT {column[0]}, {column[1]} FROM {table} ORDER BY 1")
        return [(str(k), json.loads(v)) for k, v in rows]

    def delete_json(self, table: str, key: str) -> None:
        """Remove an entry of `datasets` or `meta`."""
        column = {"datasets": "name", "meta": "key"}[table]
        with self.transaction() as db:
            db.execute(f"DELETE FROM {table} WHERE {column}=?", (key,))

    # --- maintenance ---

    def integrity_check(self) -> str:
        """SQLite's integrity_check verdict ("ok" when healthy)."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    def size_bytes(self) -> int:
        """Size of the store file and its WAL on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    # --- LLM response cache and usage ledger (used by neuron_desk.llm) ---

    def llm_cache_get(self, key: str) -> str | None:
        """A cached LLM response (JSON text) by its key, or None."""
        rows = self._query("SELECT response FROM llm_cache WHERE key=?", (key,))
        return decompress(rows[0][0]) if rows else None

    def llm_cache_put(self, key: str, endpoint: str, model: str, response: str) -> None:
        """Cache an LLM response (JSON text), replacing an older one with the same key."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?, ?)",
                (key, endpoint, model, compress(response), time.time()),
            )

    def llm_cache_count(self, endpoint: str | None = None) -> int:
        """Number of cached responses (of one endpoint)."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        return int(self._query(f"SELECT COUNT(*) FROM llm_cache {where}", params)[0][0])

    def llm_cache_clear(self, endpoint: str | None = None) -> int:
        """Forget cached responses (of one endpoint); how many."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        with self.transaction() as db:
            return int(db.execute(f"DELETE FROM llm_cache {where}", params).rowcount)

    def add_usage(
        self,
        run: str | None,
        endpoint: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached: bool,
    ) -> None:
        """Record one LLM request's token usage (cached: answered from the response cache)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO usage (run, endpoint, model, prompt_tokens, completion_tokens, "
                "cached, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run, endpoint, model, prompt_tokens, completion_tokens, int(cached), time.time()),
            )

    def usage_totals(self, run: str | None = None) -> list[tuple[str, str, int, int, int, int]]:
        """(endpoint, model, requests sent, requests cached, prompt tokens, completion tokens)
        per endpoint and model, of one run or of all; cached requests' tokens are not counted."""
        where, params = ("WHERE run=?", (run,)) if run is not None else ("", ())
        rows = self._query(
            "SELECT endpoint, model, SUM(1 - cached), SUM(cached), "
            "SUM(CASE WHEN cached THEN 0 ELSE prompt_tokens END), "
            "SUM(CASE WHEN cached THEN 0 ELSE completion_tokens END) "
            f"FROM usage {where} GROUP BY endpoint, model ORDER BY endpoint, model",
            params,
        )
        return [(str(e), str(m), int(s), int(c), int(p), int(o)) for e, m, s, c, p, o in rows]


_KEYED = {
    "capabilities": (
        "SELECT data FROM capabilities WHERE endpoint=? AND model=?",
        "INSERT OR REPLACE INTO capabilities VALUES (?, ?, ?, ?)",
    ),
    "datasets": (
        "SELECT spec FROM datasets WHERE name=?",
        "INSERT OR REPLACE INTO datasets VALUES (?, ?)",
    ),
    "meta": ("SELECT value FROM meta WHERE key=?", "INSERT OR REPLACE INTO meta VALUES (?, ?)"),
}


class _Tx:
    """The connection inside a transaction: execute statements, nothing else."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.execute: Callable[..., sqlite3.Cursor] = db.execute

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


def _row(r: tuple[Any, ...]) -> ExplanationRow:
    return ExplanationRow(
        id=int(r[0]),
        dataset=str(r[1]),
        layer=int(r[2]),
        neuron=int(r[3]),
        explanation=str(r[4]),
        score=None if r[5] is None else float(r[5]),
        source=str(r[6]),
        provenance=json.loads(r[7]) if r[7] else {},
        created_at=float(r[8]),
    )


def _without_score(row: ExplanationRow) -> ExplanationRow:
    return ExplanationRow(
        row.id, row.dataset, row.layer, row.neuron, row.explanation, None, row.source,
        row.provenance, row.created_at,
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
        return StoreError(f"the store {path} is corrupt: restart neuron-desk to move it aside")
    return StoreError(f"store {path}: {exc}")
