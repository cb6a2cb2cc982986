"""The LLM response cache (tables `llm_cache_entries` and `llm_cache`): every answer kept by
its exact request.

The key is the sha256 of the endpoint, the path and the request body as canonical JSON (the
body names the model), so the same request to the same endpoint is answered from the store.

A response is stored as the bytes the endpoint sent (the API key blanked), compressed cheaply:
zstd level 1 when the `zstandard` wheel is installed, else zlib level 1. Entries are told apart
by their first bytes (a zstd frame's magic number), so entries written by earlier versions
(zlib level 6 of re-encoded JSON) read as before, and so does a cache moved between machines
with and without zstd (reading a zstd entry without it is a clear error).

Two tables, one cache: answers are written to `llm_cache_entries` (a rowid table: its blobs
live in overflow pages, cheap to write and read), and a store made before schema 5 keeps its
older answers in `llm_cache` (WITHOUT ROWID), where they are read, counted, imported and
cleared but never copied (no migration holds the store's lock for a copy of a large cache). A
key is in one table at most: writing an answer removes an older copy of it from `llm_cache`.
A read-only store of an older schema has only `llm_cache`; it is looked up again until the new
table appears (another process may migrate the store meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import zlib
from typing import Any

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import StoreError
from neuron_desk.data.store import Store
from neuron_desk.llm.answers import dumps, parse_answer
from neuron_desk.llm.ledger import UsageRow, insert_usage_rows

_zstd: Any
try:  # optional: 3-4x faster than zlib level 1 on a 640 KB logprobs echo, and smaller
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the installation
    _zstd = None

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""The first four bytes of a zstd frame (a zlib stream starts with 0x78)."""
ZLIB_LEVEL = 1
ZSTD_LEVEL = 1

TABLE = "llm_cache_entries"
"""Where answers are written (schema 5 on)."""
OLD_TABLE = "llm_cache"
"""Where stores before schema 5 kept them: read, never written."""


def cache_key(endpoint: str, path: str, body: JSONDict) -> str:
    """sha256 of the endpoint, the path and the request body (canonical JSON)."""
    canonical = json.dumps(
        {"endpoint": endpoint, "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_compressors = threading.local()


def compress_body(raw: bytes) -> bytes:
    """A response body as the cache stores it: zstd level 1, or zlib level 1 without zstd
    (one compressor per thread, made once: a zstd object is not shared between threads)."""
    if _zstd is not None:
        compressor = getattr(_compressors, "zstd", None)
        if compressor is None:
            compressor = _compressors.zstd = _zstd.ZstdCompressor(level=ZSTD_LEVEL)
        return bytes(compressor.compress(raw))
    return zlib.compress(raw, ZLIB_LEVEL)


def decompress_body(blob: bytes) -> bytes:
    """The body of a stored entry, whichever way it was compressed."""
    if bytes(blob[:4]) == ZSTD_MAGIC:
        if _zstd is None:
            raise StoreError(
                "a cached LLM response is zstd-compressed but the zstandard package is not "
                "installed: pip install zstandard"
            )
        return bytes(_zstd.ZstdDecompressor().decompress(blob))
    return zlib.decompress(blob)


def compressed_response(response: JSONDict) -> bytes:
    """A response as the cache stores it (its raw bytes when it has them, compressed)."""
    return compress_body(dumps(response))


class ResponseCache:
    """LLM responses in the store, by `cache_key`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._has_table = False

    def _tables(self) -> tuple[str, ...]:
        """The cache's tables in this store, the one written first."""
        if not self._has_table:
            rows = self.store.query(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)
            )
            if not rows:
                return (OLD_TABLE,)
            self._has_table = True  # a table is never dropped: no need to look again
        return (TABLE, OLD_TABLE)

    def _lookup(self, column: str, key: str) -> list[tuple[Any, ...]]:
        """`column` of the entry under `key`, from the first table that has it (one query)."""
        tables = self._tables()
        sql = " UNION ALL ".join(f"SELECT {column} FROM {table} WHERE key=?1" for table in tables)
        return self.store.query(f"{sql} LIMIT 1", (key,))

    def get(self, endpoint: str, path: str, body: JSONDict) -> JSONDict | None:
        """The cached response of this exact request, or None."""
        return self.get_by_key(cache_key(endpoint, path, body))

    def get_by_key(self, key: str) -> JSONDict | None:
        """The cached response under `key` (decoded), or None (also for an unreadable one)."""
        raw = self.get_bytes(key)
        if raw is None:
            return None
        try:
            value: Any = parse_answer(raw)  # as the client decodes a fresh answer
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def get_bytes(self, key: str) -> bytes | None:
        """A cached response's JSON bytes by its key, or None."""
        rows = self._lookup("response", key)
        return decompress_body(rows[0][0]) if rows else None

    def get_text(self, key: str) -> str | None:
        """A cached response's JSON text by its key, or None."""
        raw = self.get_bytes(key)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def contains(self, endpoint: str, path: str, body: JSONDict) -> bool:
        """Whether this exact request is cached."""
        return bool(self._lookup("1", cache_key(endpoint, path, body)))

    def put(self, endpoint: str, path: str, body: JSONDict, response: JSONDict) -> None:
        """Cache a response (a read-only store is left alone)."""
        self.put_by_key(cache_key(endpoint, path, body), endpoint, body, response)

    def put_by_key(
        self,
        key: str,
        endpoint: str,
        body: JSONDict,
        response: JSONDict,
        usage_rows: list[UsageRow] | None = None,
    ) -> None:
        """Cache a response under a key computed already: the raw bytes it came as (a
        `RawAnswer`), else its compact JSON; compressed. `usage_rows` (the ledger's rows of
        the requests that brought it) are written in the same transaction."""
        if self.store.read_only:
            return
        blob = compress_body(dumps(response))
        with self.store.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?)",
                (key, endpoint, str(body.get("model", "")), blob, time.time()),
            )
            db.execute(f"DELETE FROM {OLD_TABLE} WHERE key=?", (key,))
            if usage_rows:
                insert_usage_rows(db, usage_rows)

    async def aput(
        self,
        key: str,
        endpoint: str,
        body: JSONDict,
        response: JSONDict,
        usage_rows: list[UsageRow] | None = None,
    ) -> None:
        """`put_by_key` in a worker thread: compressing a large answer and writing it release
        the GIL, so the event loop goes on reading other answers meanwhile (and never waits
        for the store while another answer is written). Once started, the write finishes
        even if the caller is cancelled."""
        if self.store.read_only:
            return
        await asyncio.to_thread(self.put_by_key, key, endpoint, body, response, usage_rows)

    def put_many(self, endpoint: str, entries: list[tuple[str, str, bytes]]) -> int:
        """Cache (key, model, compressed response) entries of `endpoint` at once (a staged
        batch's answers, keyed by their `custom_id`); how many were not cached before."""
        if self.store.read_only or not entries:
            return 0
        keys = [key for key, _model, _blob in entries]
        now = time.time()
        with self.store.transaction() as db:
            known = {
                row[0]
                for table in (TABLE, OLD_TABLE)
                for start in range(0, len(keys), 500)
                for row in db.execute(
                    f"SELECT key FROM {table} WHERE key IN "
                    f"({','.join('?' * len(keys[start : start + 500]))})",
                    tuple(keys[start : start + 500]),
                ).fetchall()
            }
            db.executemany(
                f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?)",
                [(key, endpoint, model, blob, now) for key, model, blob in entries],
            )
            db.executemany(f"DELETE FROM {OLD_TABLE} WHERE key=?", [(key,) for key in keys])
        return len(set(keys) - known)

    def import_from(self, other: ResponseCache, chunk: int = 2000) -> int:
        """Copy another store's cached responses this one lacks (from both its tables, whatever
        its schema); how many."""
        copied = 0
        for table in other._tables():
            last = ""
            while True:
                rows = other.store.query(
                    f"SELECT key, endpoint, model, response, created_at FROM {table} "
                    "WHERE key > ? ORDER BY key LIMIT ?",
                    (last, chunk),
                )
                if not rows:
                    break
                last = str(rows[-1][0])
                with self.store.transaction() as db:
                    before = db.execute("SELECT total_changes()").fetchone()[0]
                    db.executemany(
                        f"INSERT OR IGNORE INTO {TABLE} SELECT ?1, ?2, ?3, ?4, ?5 "
                        f"WHERE NOT EXISTS (SELECT 1 FROM {OLD_TABLE} WHERE key=?1)",
                        rows,
                    )
                    copied += db.execute("SELECT total_changes()").fetchone()[0] - before
        return copied

    def count(self, endpoint: str | None = None) -> int:
        """Number of cached responses (of one endpoint)."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        return sum(
            int(self.store.query(f"SELECT COUNT(*) FROM {table} {where}", params)[0][0])
            for table in self._tables()
        )

    def clear(self, endpoint: str | None = None) -> int:
        """Forget cached responses (of one endpoint), in both tables; how many."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        tables = self._tables()
        with self.store.transaction() as db:
            return sum(
                int(db.execute(f"DELETE FROM {table} {where}", params).rowcount) for table in tables
            )
