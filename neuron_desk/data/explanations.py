"""Stored explanations and their full-text search (tables `explanations`, `explanations_fts`).

Published explanations are indexed here when their file is fetched (for search); generated and
user-written ones are stored the moment they are made, with their provenance and, when
scored, the whole `ScoredExplanation`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from neuron_desk.core import codec
from neuron_desk.core.model import ActivationRecord, NeuronSimulationResults, ScoredExplanation
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.store import Store, compress, decompress

PUBLISHED = "published"
GENERATED = "generated"
USER = "user"

_COLUMNS = "id, dataset, layer, neuron, explanation, score, source, provenance, created_at"


@dataclass(frozen=True)
class ExplanationRow:
    """One stored explanation (published, generated or written by the user)."""

    id: int
    ref: NeuronRef
    explanation: str
    score: float | None
    source: str
    provenance: dict[str, Any]
    created_at: float


class Explanations:
    """The explanations of every neuron in a store, and search over them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(
        self,
        ref: NeuronRef,
        explanation: str,
        score: float | None,
        source: str,
        provenance: dict[str, Any],
        result_json: str | None = None,
    ) -> int:
        """Store an explanation at once (with its scoring result and provenance); its id."""
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO explanations (dataset, layer, neuron, explanation, score, source, "
                "provenance, result, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref.dataset,
                    ref.layer,
                    ref.index,
                    explanation,
                    score,
                    source,
                    json.dumps(provenance),
                    compress(result_json) if result_json is not None else None,
                    time.time(),
                ),
            )
            return int(cursor.lastrowid or 0)

    def replace_published(self, ref: NeuronRef, rows: list[tuple[str, float | None]]) -> None:
        """Index a neuron's published explanations for search (replacing earlier ones)."""
        with self.store.transaction() as db:
            db.execute(
                "DELETE FROM explanations WHERE dataset=? AND layer=? AND neuron=? "
                "AND source='published'",
                (ref.dataset, ref.layer, ref.index),
            )
            for text, score in rows:
                db.execute(
                    "INSERT INTO explanations (dataset, layer, neuron, explanation, score, source, "
                    "provenance, result, created_at) VALUES (?, ?, ?, ?, ?, 'published', '{}', "
                    "NULL, ?)",
                    (ref.dataset, ref.layer, ref.index, text, score, time.time()),
                )

    def index_published(self, ref: NeuronRef, results: NeuronSimulationResults) -> None:
        """Index the explanations of a published explanations file (replacing earlier ones)."""
        rows = [(e.explanation, e.get_preferred_score()) for e in results.scored_explanations]
        self.replace_published(ref, rows)

    def clear_published(self, dataset: str | None = None) -> None:
        """Forget indexed published explanations (when their files are cleared)."""
        where, params = ("AND dataset=?", (dataset,)) if dataset else ("", ())
        with self.store.transaction() as db:
            db.execute(f"DELETE FROM explanations WHERE source='published' {where}", params)

    def of(self, ref: NeuronRef, source: str | None = None) -> list[ExplanationRow]:
        """Stored explanations of a neuron, newest first."""
        sql = f"SELECT {_COLUMNS} FROM explanations WHERE dataset=? AND layer=? AND neuron=?"
        params: tuple[Any, ...] = (ref.dataset, ref.layer, ref.index)
        if source is not None:
            sql += " AND source=?"
            params += (source,)
        return _rows(self.store.query(sql + " ORDER BY created_at DESC, id DESC", params))

    def own(self, ref: NeuronRef) -> list[ExplanationRow]:
        """A neuron's generated and user-written explanations, newest first."""
        return [row for row in self.of(ref) if row.source != PUBLISHED]

    def neurons(self, dataset: str, *, published: bool = True) -> list[NeuronRef]:
        """Neurons of `dataset` with stored explanations (`published=False`: own ones only)."""
        sql = "SELECT DISTINCT layer, neuron FROM explanations WHERE dataset=?"
        if not published:
            sql += " AND source != 'published'"
        rows = self.store.query(sql + " ORDER BY layer, neuron", (dataset,))
        return [NeuronRef(dataset, int(a), int(b)) for a, b in rows]

    def of_run(self, run: str) -> list[ExplanationRow]:
        """Explanations whose provenance names `run` (a batch or an app run), oldest first."""
        sql = (
            f"SELECT {_COLUMNS} FROM explanations "
            "WHERE json_extract(provenance, '$.run') = ? ORDER BY id"
        )
        return _rows(self.store.query(sql, (run,)))

    def delete_of_run(self, run: str, ref: NeuronRef) -> int:
        """Remove a run's explanations of one neuron (an interrupted, partial result)."""
        with self.store.transaction() as db:
            count = db.execute(
                "DELETE FROM explanations WHERE json_extract(provenance, '$.run') = ? "
                "AND dataset = ? AND layer = ? AND neuron = ?",
                (run, ref.dataset, ref.layer, ref.index),
            ).rowcount
        return int(count)

    def counts_of_run(self, run: str) -> dict[NeuronRef, int]:
        """How many explanations (not second opinions) of `run` each neuron has."""
        rows = self.store.query(
            "SELECT dataset, layer, neuron, COUNT(*) FROM explanations "
            "WHERE json_extract(provenance, '$.run') = ? "
            "AND COALESCE(json_extract(provenance, '$.scorer'), 'simulation') = 'simulation' "
            "GROUP BY dataset, layer, neuron",
            (run,),
        )
        return {NeuronRef(str(d), int(a), int(b)): int(n) for d, a, b, n in rows}

    def neurons_of_run(self, run: str) -> set[NeuronRef]:
        """The neurons with a result whose provenance names `run` (no rows loaded)."""
        rows = self.store.query(
            "SELECT DISTINCT dataset, layer, neuron FROM explanations "
            "WHERE json_extract(provenance, '$.run') = ?",
            (run,),
        )
        return {NeuronRef(str(d), int(a), int(b)) for d, a, b in rows}

    def best_own(self, dataset: str) -> list[ExplanationRow]:
        """The best generated or user explanation of every neuron of `dataset` (a scored one
        if the neuron has any), by layer and neuron."""
        sql = (
            f"SELECT {_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY layer, neuron "
            "ORDER BY score IS NULL, score DESC, id) AS place FROM explanations "
            "WHERE dataset = ? AND source != 'published') WHERE place = 1 ORDER BY layer, neuron"
        )
        return _rows(self.store.query(sql, (dataset,)))

    def result(self, explanation_id: int) -> str | None:
        """The stored ScoredExplanation JSON of an explanation, if it was scored."""
        rows = self.store.query("SELECT result FROM explanations WHERE id=?", (explanation_id,))
        return decompress(rows[0][0]) if rows and rows[0][0] is not None else None

    def search(
        self, text: str, dataset: str | None = None, limit: int = 50
    ) -> list[ExplanationRow]:
        """Explanations matching `text` (full-text, every word must appear), best match first;
        equal matches (the same text sampled again, or published for many neurons) by score,
        best first, an unscored one last."""
        words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
        if not words:
            return []
        query = " ".join(f'"{w}"' for w in words)
        columns = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
        sql = (
            f"SELECT {columns} FROM explanations_fts f JOIN explanations e "
            "ON e.id = f.rowid WHERE explanations_fts MATCH ?"
        )
        params: tuple[Any, ...] = (query,)
        if dataset is not None:
            sql += " AND e.dataset=?"
            params += (dataset,)
        sql += " ORDER BY rank, e.score IS NULL, e.score DESC, e.id LIMIT ?"
        return _rows(self.store.query(sql, (*params, limit)))


    def import_from(self, other: Explanations, chunk: int = 1000) -> int:
        """Copy another store's generated and user results (provenance, scoring result and time
        kept) that this store does not hold yet; how many were copied."""
        copied = 0
        last = 0
        while True:
            rows = other.store.query(
                "SELECT id, dataset, layer, neuron, explanation, score, source, provenance, "
                "result, created_at FROM explanations WHERE source != 'published' AND id > ? "
                "ORDER BY id LIMIT ?",
                (last, chunk),
            )
            if not rows:
                return copied
            last = int(rows[-1][0])
            with self.store.transaction() as db:
                for row in rows:
                    known = db.execute(
                        "SELECT 1 FROM explanations WHERE dataset=? AND layer=? AND neuron=? "
                        "AND explanation=? AND provenance=?",
                        (row[1], row[2], row[3], row[4], row[7]),
                    ).fetchone()
                    if known is None:
                        db.execute(
                            "INSERT INTO explanations (dataset, layer, neuron, explanation, "
                            "score, source, provenance, result, created_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            row[1:],
                        )
                        copied += 1


def _rows(rows: list[tuple[Any, ...]]) -> list[ExplanationRow]:
    return [
        ExplanationRow(
            id=int(r[0]),
            ref=NeuronRef(str(r[1]), int(r[2]), int(r[3])),
            explanation=str(r[4]),
            score=None if r[5] is None else float(r[5]),
            source=str(r[6]),
            provenance=json.loads(r[7]) if r[7] else {},
            created_at=float(r[8]),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class NeuronExplanation:
    """One explanation of a neuron as listed and exported: published, generated or the user's."""

    explanation: str
    score: float | None
    source: str
    scored: ScoredExplanation | None = None
    """The whole scoring (per-sequence simulations), when there is one."""
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None
    row_id: int | None = None

    opinions: tuple[dict[str, Any], ...] = ()
    """Second opinions on this explanation (detection, fuzzing): each its `metrics`."""

    @property
    def scorer(self) -> str:
        """"simulation", or the second-opinion scorer ("detection", "fuzzing") of this row."""
        return str(self.provenance.get("scorer") or "simulation")

    @property
    def method(self) -> str:
        """The simulator that scored it ("" if unknown or unscored)."""
        simulation = self.scored.scored_simulation if self.scored is not None else None
        return str(self.provenance.get("method") or (simulation.method if simulation else "") or "")

    @property
    def model(self) -> str:
        """The simulator model that scored it ("" if unknown)."""
        simulation = self.scored.scored_simulation if self.scored is not None else None
        return str(self.provenance.get("model") or (simulation.model if simulation else "") or "")


def neuron_explanations(
    explanations: Explanations, ref: NeuronRef, published: NeuronSimulationResults | None
) -> list[NeuronExplanation]:
    """A neuron's published explanations (in file order), then its own, oldest first."""
    listed = [
        NeuronExplanation(e.explanation, e.get_preferred_score(), PUBLISHED, scored=e)
        for e in (published.scored_explanations if published is not None else [])
    ]
    for row in reversed(explanations.own(ref)):
        result = explanations.result(row.id)
        scored = (
            codec.loads(result, ScoredExplanation, source=f"explanation {row.id}")
            if result is not None
            else None
        )
        listed.append(
            NeuronExplanation(
                row.explanation,
                row.score,
                row.source,
                scored=scored,
                provenance=row.provenance,
                created_at=row.created_at,
                row_id=row.id,
            )
        )
    return listed


def with_second_opinions(listed: list[NeuronExplanation]) -> list[NeuronExplanation]:
    """The listed explanations with each second-opinion row (detection, fuzzing) folded into
    the explanations of the same text as `opinions`; an opinion on a text not listed otherwise
    stays a row of its own (its `opinions` itself)."""
    opinions: dict[str, list[dict[str, Any]]] = {}
    for item in listed:
        if item.scorer != "simulation":
            opinions.setdefault(item.explanation.strip(), []).append(_metrics(item))
    simulations = [item for item in listed if item.scorer == "simulation"]
    texts = {item.explanation.strip() for item in simulations}
    folded = [
        replace(item, opinions=tuple(opinions.get(item.explanation.strip(), ())))
        for item in simulations
    ]
    orphans = [
        replace(item, opinions=(_metrics(item),))
        for item in listed
        if item.scorer != "simulation" and item.explanation.strip() not in texts
    ]
    return folded + orphans


def _metrics(item: NeuronExplanation) -> dict[str, Any]:
    metrics = dict(item.provenance.get("metrics") or {})
    metrics.setdefault("scorer", item.scorer)
    return metrics


YOUR_TEXT = "your text"
"""The provenance source of a user record: activations of the user's own text."""


@dataclass(frozen=True)
class UserRecord:
    """An activation record the user made from their own text (table `user_records`), kept
    apart from the dataset's records: it never changes or joins a dataset's files."""

    id: int
    ref: NeuronRef
    record: ActivationRecord
    provenance: dict[str, Any]
    created_at: float


class UserRecords:
    """The user's own activation records of every neuron or latent in a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, ref: NeuronRef, record: ActivationRecord, provenance: dict[str, Any]) -> int:
        """Store a record of the user's text (tokens and activations, equal length); its id."""
        if len(record.tokens) != len(record.activations) or not record.tokens:
            raise ValueError("a user record needs one activation per token, and some tokens")
        provenance = {"source": YOUR_TEXT, **provenance}
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO user_records (dataset, layer, neuron, record, provenance, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    ref.dataset,
                    ref.layer,
                    ref.index,
                    codec.dumps(record),
                    json.dumps(provenance),
                    time.time(),
                ),
            )
            return int(cursor.lastrowid or 0)

    def of(self, ref: NeuronRef) -> list[UserRecord]:
        """A unit's user records, oldest first."""
        rows = self.store.query(
            "SELECT id, record, provenance, created_at FROM user_records "
            "WHERE dataset=? AND layer=? AND neuron=? ORDER BY id",
            (ref.dataset, ref.layer, ref.index),
        )
        return [
            UserRecord(int(i), ref, codec.loads(r, ActivationRecord), json.loads(p), float(t))
            for i, r, p, t in rows
        ]

    def delete(self, record_id: int) -> None:
        """Forget one user record."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM user_records WHERE id=?", (record_id,))
