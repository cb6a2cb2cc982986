"""The LLM response cache (table `llm_cache`): every answer kept by its exact request.

The key is the sha256 of the endpoint, the path and the request body as canonical JSON (the
body names the model), so the same request to the same endpoint is answered from the store.

A response is stored as the bytes the endpoint sent (the API key blanked), compressed cheaply:
zstd level 1 when the `zstandard` wheel is installed, else zlib level 1. Entries are told apart
by their first bytes (a zstd frame's magic number), so entries written by earlier versions
(zlib level 6 of re-encoded JSON) read as before, and so does a cache moved between machines
with and without zstd (reading a zstd entry without it is a clear error).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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


def cache_key(endpoint: str, path: str, body: JSONDict) -> str:
    """sha256 of the endpoint, the path and the request body (canonical JSON)."""
    canonical = json.dumps(
        {"endpoint": endpoint, "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def compress_body(raw: bytes) -> bytes:
    """A response body as the cache stores it: zstd level 1, or zlib level 1 without zstd."""
    if _zstd is not None:
        return bytes(_zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(raw))
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
        rows = self.store.query("SELECT response FROM llm_cache WHERE key=?", (key,))
        return decompress_body(rows[0][0]) if rows else None

    def get_text(self, key: str) -> str | None:
        """A cached response's JSON text by its key, or None."""
        raw = self.get_bytes(key)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def contains(self, endpoint: str, path: str, body: JSONDict) -> bool:
        """Whether this exact request is cached."""
        key = cache_key(endpoint, path, body)
        return bool(self.store.query("SELECT 1 FROM llm_cache WHERE key=?", (key,)))

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
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?, ?)",
                (key, endpoint, str(body.get("model", "")), blob, time.time()),
            )
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
                for start in range(0, len(keys), 500)
                for row in db.execute(
                    "SELECT key FROM llm_cache WHERE key IN "
                    f"({','.join('?' * len(keys[start : start + 500]))})",
                    tuple(keys[start : start + 500]),
                ).fetchall()
            }
            db.executemany(
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?, ?)",
                [(key, endpoint, model, blob, now) for key, model, blob in entries],
            )
        return len(set(keys) - known)

    def import_from(self, other: ResponseCache, chunk: int = 2000) -> int:
        """Copy another store's cached responses this one lacks; how many."""
        copied = 0
        last = ""
        while True:
            rows = other.store.query(
                "SELECT key, endpoint, model, response, created_at FROM llm_cache "
                "WHERE key > ? ORDER BY key LIMIT ?",
                (last, chunk),
            )
            if not rows:
                return copied
            last = str(rows[-1][0])
            with self.store.transaction() as db:
                before = db.execute("SELECT total_changes()").fetchone()[0]
                db.executemany("INSERT OR IGNORE INTO llm_cache VALUES (?, ?, ?, ?, ?)", rows)
                copied += db.execute("SELECT total_changes()").fetchone()[0] - before

    def count(self, endpoint: str | None = None) -> int:
        """Number of cached responses (of one endpoint)."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        return int(self.store.query(f"SELECT COUNT(*) FROM llm_cache {where}", params)[0][0])

    def clear(self, endpoint: str | None = None) -> int:
        """Forget cached responses (of one endpoint); how many."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        with self.store.transaction() as db:
            return int(db.execute(f"DELETE FROM llm_cache {where}", params).rowcount)
