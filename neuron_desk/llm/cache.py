"""The LLM response cache (table `llm_cache`): every answer kept by its exact request.

The key is the sha256 of the endpoint, the path and the request body as canonical JSON (the
body names the model), so the same request to the same endpoint is answered from the store.
"""

from __future__ import annotations

import hashlib
import json
import time

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

    def count(self, endpoint: str | None = None) -> int:
        """Number of cached responses (of one endpoint)."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        return int(self.store.query(f"SELECT COUNT(*) FROM llm_cache {where}", params)[0][0])

    def clear(self, endpoint: str | None = None) -> int:
        """Forget cached responses (of one endpoint); how many."""
        where, params = ("WHERE endpoint=?", (endpoint,)) if endpoint else ("", ())
        with self.store.transaction() as db:
            return int(db.execute(f"DELETE FROM llm_cache {where}", params).rowcount)
