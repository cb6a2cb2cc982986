"""The LLM response cache (table `llm_cache`): every answer kept by its exact request.

The key is the sha256 of the endpoint, the path and the request body as canonical JSON (the
body names the model), so the same request to the same endpoint is answered from the store.
"""

from __future__ import annotations

import hashlib
import json
import time

import orjson

from neuron_desk.core.backend import JSONDict
from neuron_desk.data.store import Store, compress, decompress


def cache_key(endpoint: str, path: str, body: JSONDict) -> str:
    """sha256 of the endpoint, the path and the request body (canonical JSON)."""
    canonical = json.dumps(
        {"endpoint": endpoint, "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def compressed_response(response: JSONDict) -> bytes:
    """A response as the cache stores it (compressed compact JSON)."""
    return compress(_json_text(response))


def _json_text(response: JSONDict) -> str:
    """Compact JSON text of a response (orjson: fast; json for what orjson refuses)."""
    try:
        return orjson.dumps(response).decode()
    except TypeError:
        return json.dumps(response, ensure_ascii=False)


class ResponseCache:
    """LLM responses in the store, by `cache_key`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, endpoint: str, path: str, body: JSONDict) -> JSONDict | None:
        """The cached response of this exact request, or None."""
        text = self.get_text(cache_key(endpoint, path, body))
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def get_text(self, key: str) -> str | None:
        """A cached response's JSON text by its key, or None."""
        rows = self.store.query("SELECT response FROM llm_cache WHERE key=?", (key,))
        return decompress(rows[0][0]) if rows else None

    def contains(self, endpoint: str, path: str, body: JSONDict) -> bool:
        """Whether this exact request is cached."""
        key = cache_key(endpoint, path, body)
        return bool(self.store.query("SELECT 1 FROM llm_cache WHERE key=?", (key,)))

    def put(self, endpoint: str, path: str, body: JSONDict, response: JSONDict) -> None:
        """Cache a response (a read-only store is left alone)."""
        if self.store.read_only:
            return
        text = json.dumps(response, ensure_ascii=False)
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?, ?)",
                (
                    cache_key(endpoint, path, body),
                    endpoint,
                    str(body.get("model", "")),
                    compress(text),
                    time.time(),
                ),
            )

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
