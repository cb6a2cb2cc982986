"""Opening a stored neuron (issue 12, item 4): every kind in one query, checked on the
caller's thread when small and in a worker thread when large, with the border's verdicts
(a refused stored copy is that kind's error; the others still load). Real SQLite files."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from neuron_desk.core.errors import CodecError, NotFound
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data import service as service_module
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import Fetched, NeuronService
from neuron_desk.data.store import Store, compress
from tests.data.mirror import Mirror

REF = NeuronRef("mirror", 0, 2)


def stored_neuron(registry: Registry, store: Store) -> None:
    """Fetch every kind of REF from the mirror into the store (one has none: 404)."""

    async def go() -> None:
        s = NeuronService(registry, store, timeout_s=5.0, checker_processes=0)
        try:
            await s.neuron(REF)
        finally:
            await s.aclose()

    asyncio.run(go())


def open_offline(registry: Registry, store: Store) -> Any:
    async def go() -> Any:
        s = NeuronService(registry, store, offline=True, checker_processes=0)
        try:
            return await s.neuron(REF)
        finally:
            await s.aclose()

    return asyncio.run(go())


def file_queries(store: Store) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(
        lambda sql: seen.append(sql) if "FROM files" in sql and "SELECT" in sql else None
    )
    return seen


def checked_on(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    threads: list[int] = []
    checked = NeuronService._checked_stored

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return checked(*args)

    monkeypatch.setattr(NeuronService, "_checked_stored", staticmethod(spy))
    return threads


def test_every_stored_kind_is_read_in_one_query_and_checked_here(
    registry: Registry, store: Store, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_neuron(registry, store)
    online = {k: store.get_file(REF, k.value) for k in Kind}
    kinds = [k for k, f in online.items() if f is not None]
    assert len(kinds) >= 3
    queries = file_queries(store)
    threads = checked_on(monkeypatch)
    data = open_offline(registry, store)
    assert len(queries) == 1, queries  # all kinds at once
    assert threads == [threading.get_ident()]  # no hand-over to a worker thread
    for kind in kinds:
        fetched = data.of_kind(kind)
        assert isinstance(fetched, Fetched) and fetched.origin == "store", kind
    for kind in set(Kind) - set(kinds):  # what the store lacks says so, as before
        assert isinstance(data.of_kind(kind), NotFound), kind


def test_a_large_stored_neuron_is_checked_in_a_worker_thread_with_equal_values(
    registry: Registry, store: Store, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_neuron(registry, store)
    small = open_offline(registry, store)
    threads = checked_on(monkeypatch)
    monkeypatch.setattr(service_module, "INLINE_BYTES", 0)
    large = open_offline(registry, store)
    assert threads and threads[0] != threading.get_ident()
    for kind in Kind:
        a, b = small.of_kind(kind), large.of_kind(kind)
        if isinstance(a, Fetched):
            assert isinstance(b, Fetched) and a.value == b.value, kind


def test_a_refused_stored_copy_is_that_kinds_error_and_the_others_load(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    stored_neuron(registry, store)
    with store.transaction() as db:
        db.execute(
            "UPDATE files SET body=? WHERE dataset=? AND kind=? AND layer=? AND neuron=?",
            (compress('{"neuron_id": 7}'), REF.dataset, "explanations", REF.layer, REF.index),
        )
    data = open_offline(registry, store)
    assert isinstance(data.explanations, CodecError)
    assert str(data.explanations).startswith("the stored published explanation: ")
    assert isinstance(data.record, Fetched) and data.record.origin == "store"
