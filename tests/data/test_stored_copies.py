"""A stored copy is checked once (issue 12, item 4): a body the current rules accepted as exact
is stored with their version and read back without a second check, and it then gives the very
value `accept` gave, of the same types; every other copy (an older version's, a salvaged one,
one with converted or repaired values, one that no longer builds) is checked again when read;
a damaged body is refused by its checksum. Real SQLite files."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError, StoreError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data import validation
from neuron_desk.data.registry import Kind, Registry, bundled_dataset_files, read_bundled
from neuron_desk.data.service import Fetched, NeuronService
from neuron_desk.data.store import Store, compress, salvage_into
from neuron_desk.data.validation import RULES_VERSION, accept, accept_stored
from tests.data.mirror import Mirror
from tests.data.test_validation_paths import DATASET, EXAMPLES, REF, REPLACEMENTS, _paths

MIRROR_REF = NeuronRef("mirror", 0, 2)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type at every level (0 and 0.0 differ here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def read_back(kind: Kind, accepted: validation.Accepted, ref: NeuronRef = REF) -> Any:
    return accept_stored(
        kind,
        accepted.text,
        dataset=DATASET,
        ref=ref,
        source="the stored copy",
        checked=accepted.checked,
    ).value


@pytest.mark.parametrize("kind", list(Kind))
def test_an_exact_file_is_read_back_unchecked_as_the_very_value(kind: Kind) -> None:
    accepted = accept(kind, codec.dumps(EXAMPLES[kind]), dataset=DATASET, ref=REF, source="x")
    assert accepted.checked == RULES_VERSION
    assert same(read_back(kind, accepted), accepted.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(list(Kind)))
def test_every_variant_accepted_as_exact_reads_back_as_its_value(
    data: st.DataObject, kind: Kind
) -> None:
    """Whatever `accept` calls exact, read back without checks, is what `accept` built."""
    tree = json.loads(codec.dumps(EXAMPLES[kind]))
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    variant = copy.deepcopy(tree)
    parent = variant
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(REPLACEMENTS)
    else:
        del parent[path[-1]]
    try:
        accepted = accept(kind, json.dumps(variant), dataset=DATASET, ref=REF, source="x")
    except CodecError:
        return
    if accepted.checked:
        assert same(read_back(kind, accepted), accepted.value), (path, variant)


def test_converted_repaired_or_carefully_read_files_are_not_exact() -> None:
    tree = json.loads(codec.dumps(EXAMPLES[Kind.ACTIVATIONS]))
    tree["random_sample"][0]["activations"][0] = 3  # an integer where a float goes
    integer = accept(Kind.ACTIVATIONS, json.dumps(tree), dataset=DATASET, ref=REF, source="x")
    assert integer.checked == 0
    tree = json.loads(codec.dumps(EXAMPLES[Kind.ACTIVATIONS]))
    tree["mean"] = float("nan")  # NaN, as Python's json writes it: the careful path
    nan = accept(Kind.ACTIVATIONS, json.dumps(tree), dataset=DATASET, ref=REF, source="x")
    assert nan.checked == 0
    broken = (
        codec.dumps(EXAMPLES[Kind.ACTIVATIONS])
        .encode()
        .replace(b'"tokens": ["', b'"tokens": ["\xff', 1)
    )
    repaired = accept(Kind.ACTIVATIONS, broken, dataset=DATASET, ref=REF, source="x")
    assert repaired.repaired and repaired.checked == 0
    exact = accept(
        Kind.ACTIVATIONS,
        codec.dumps(EXAMPLES[Kind.ACTIVATIONS]),
        dataset=DATASET,
        ref=REF,
        source="x",
    )
    assert exact.checked == RULES_VERSION  # the counter is per call, not left over


def _unequal_lengths() -> str:
    tree = json.loads(codec.dumps(EXAMPLES[Kind.ACTIVATIONS]))
    tree["random_sample"][0]["activations"].append(0.5)
    return json.dumps(tree)


@pytest.mark.parametrize("version", [0, RULES_VERSION - 1, RULES_VERSION + 1])
def test_a_copy_of_other_rules_is_checked_again(version: int) -> None:
    with pytest.raises(CodecError, match=r"the stored copy.*random_sample\[0\]"):
        accept_stored(
            Kind.ACTIVATIONS,
            _unequal_lengths(),
            dataset=DATASET,
            ref=REF,
            source="the stored copy",
            checked=version,
        )


def test_an_exact_copy_that_no_longer_builds_is_refused_by_the_careful_path() -> None:
    for text in ('{"neuron_id": 7}', '{"most_positive', "[]"):
        with pytest.raises(CodecError, match="the stored copy"):
            accept_stored(
                Kind.ACTIVATIONS,
                text,
                dataset=DATASET,
                ref=REF,
                source="the stored copy",
                checked=RULES_VERSION,
            )


def test_an_exact_copy_of_another_neuron_is_refused() -> None:
    accepted = accept(
        Kind.ACTIVATIONS,
        codec.dumps(EXAMPLES[Kind.ACTIVATIONS]),
        dataset=DATASET,
        ref=REF,
        source="x",
    )
    with pytest.raises(CodecError, match="not 3:6"):
        read_back(Kind.ACTIVATIONS, accepted, ref=NeuronRef("d", 3, 6))


# --- through the store and the service ---


def _fetch_all(registry: Registry, store: Store) -> None:
    async def go() -> None:
        s = NeuronService(registry, store, timeout_s=5.0, checker_processes=0)
        try:
            await s.neuron(MIRROR_REF)
        finally:
            await s.aclose()

    asyncio.run(go())


def _open(registry: Registry, store: Store) -> Any:
    async def go() -> Any:
        s = NeuronService(registry, store, offline=True, checker_processes=0)
        try:
            return await s.neuron(MIRROR_REF)
        finally:
            await s.aclose()

    return asyncio.run(go())


def _versions(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT kind, checked FROM files"))
    finally:
        db.close()


def test_a_fetched_file_is_stored_with_the_rules_version_and_read_back_equal(
    registry: Registry, store: Store, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fetch_all(registry, store)
    versions = _versions(store.path)
    assert versions and set(versions.values()) == {RULES_VERSION}
    calls: list[str] = []
    real_accept = validation.accept
    monkeypatch.setattr(
        validation, "accept", lambda *a, **k: calls.append("accept") or real_accept(*a, **k)
    )
    trusted = _open(registry, store)
    assert calls == []  # no stored copy was checked a second time
    monkeypatch.setattr(validation, "RULES_VERSION", RULES_VERSION + 1)  # rules changed
    checked = _open(registry, store)
    assert len(calls) == len(versions)
    for kind in Kind:
        a, b = trusted.of_kind(kind), checked.of_kind(kind)
        if isinstance(a, Fetched):
            assert isinstance(b, Fetched) and same(a.value, b.value), kind


def test_a_damaged_body_is_that_kinds_error_not_its_data(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    _fetch_all(registry, store)
    db = sqlite3.connect(store.path)
    (blob,) = db.execute(
        "SELECT body FROM files WHERE kind='activations' AND layer=? AND neuron=?",
        (MIRROR_REF.layer, MIRROR_REF.index),
    ).fetchone()
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0x01  # one bit of one byte: no error but the checksum's
    db.execute("UPDATE files SET body=? WHERE kind='activations'", (bytes(damaged),))
    db.commit()
    db.close()
    data = _open(registry, store)
    assert isinstance(data.record, StoreError) and "damaged" in str(data.record)
    others = [data.of_kind(k) for k in Kind if k is not Kind.ACTIVATIONS]
    assert any(isinstance(other, Fetched) for other in others)  # the others still load


def test_an_older_store_is_migrated_and_its_copies_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = Store.open(path)
    text = codec.dumps(EXAMPLES[Kind.ACTIVATIONS])
    store.put_file(REF, "activations", text, "network", RULES_VERSION)
    store.close()
    db = sqlite3.connect(path)  # as version 3 left it: no column, no version
    db.execute("ALTER TABLE files DROP COLUMN checked")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    old = Store.open_read_only(path, immutable=False)
    assert old.get_files(REF, ["activations"])["activations"].checked == 0
    old.close()
    migrated = Store.open(path)
    body = migrated.get_files(REF, ["activations"])["activations"]
    assert body.checked == 0 and body.text() == text
    migrated.close()


def test_salvaged_copies_are_checked_again(tmp_path: Path) -> None:
    source = Store.open(tmp_path / "a.sqlite3")
    source.put_file(
        REF, "activations", codec.dumps(EXAMPLES[Kind.ACTIVATIONS]), "network", RULES_VERSION
    )
    source.close()
    fresh = Store.open(tmp_path / "b.sqlite3")
    report = salvage_into(tmp_path / "a.sqlite3", fresh)
    assert report.copied["files"] == 1
    assert fresh.get_files(REF, ["activations"])["activations"].checked == 0
    fresh.close()


def test_new_bodies_carry_a_checksum() -> None:
    blob = compress("x" * 1000)
    assert blob[4] & 0x04  # the frame header's content-checksum flag


def test_every_shipped_bundled_body_is_exact_and_read_back_as_its_value() -> None:
    """The bundled datasets are read as exact copies (`NeuronService._shipped`): each of their
    bodies must be accepted as exact by the current rules, and read back as the same value."""
    count = 0
    for path in bundled_dataset_files():
        dataset = read_bundled(path)
        store = Store.open_read_only(path)
        try:
            rows = store.query("SELECT kind, layer, neuron FROM files")
            for kind, layer, neuron in rows:
                ref = NeuronRef(dataset.name, layer, neuron)
                body = store.get_files(ref, [kind])[kind]
                accepted = accept(Kind(kind), body.text(), dataset=dataset, ref=ref, source="b")
                assert accepted.checked == RULES_VERSION, (path.name, kind, layer, neuron)
                stored = accept_stored(
                    Kind(kind),
                    body.text(),
                    dataset=dataset,
                    ref=ref,
                    source="b",
                    checked=RULES_VERSION,
                )
                assert same(stored.value, accepted.value), (path.name, kind, layer, neuron)
                count += 1
        finally:
            store.close()
    assert count > 3000  # both samples, every kind


def test_a_bundled_neuron_is_read_without_a_second_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path / "store.sqlite3")
    registry = Registry(store)
    dataset = registry.default()
    calls: list[Kind] = []
    real_accept = validation.accept

    def counted(kind: Kind, *args: Any, **kwargs: Any) -> Any:
        calls.append(kind)
        return real_accept(kind, *args, **kwargs)

    monkeypatch.setattr(validation, "accept", counted)

    async def go() -> Any:
        service = NeuronService(registry, store, offline=True, checker_processes=0)
        try:
            ref = service.available_neurons(dataset.name)[0]
            return ref, await service.neuron(ref)
        finally:
            await service.aclose()

    ref, data = asyncio.run(go())
    assert calls == []
    fetched = data.record
    assert isinstance(fetched, Fetched) and fetched.origin == "bundled"
    body = Store.open_read_only(Path(dataset.bundled or "")).get_files(ref, ["activations"])
    careful = real_accept(
        Kind.ACTIVATIONS, body["activations"].text(), dataset=dataset, ref=ref, source="b"
    )
    assert same(fetched.value, careful.value)
    store.close()
