"""The neuron service: store first, then the bundled sample, then the dataset's source.

Every file, whether fetched, read from a folder, the bundled sample or the store itself, passes
`neuron_desk.data.validation.accept` before it is stored or shown; a refused file is reported
with its path and field, and not stored (a stored good copy is never replaced by a bad one).
A file the source answered 404 for is asked for again once `absent_ttl_s` has passed.
Concurrent requests for the same file share one fetch; a fetch nobody waits for any more is
cancelled. Offline, a miss says so at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from neuron_desk.core.errors import (
    DataError,
    NeuronDeskError,
    NotAvailableOffline,
    NotFound,
    SourceUnavailable,
    StoreError,
)
from neuron_desk.core.model import (
    NeuronRecord,
    NeuronSimulationResults,
    RelatedNeurons,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.checker import Asked, Checker, CheckerUnavailable, Rows, summary_rows
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Dataset, Kind, Registry, bundled_dataset_files
from neuron_desk.data.sources import HTTP_CONNECTIONS, FolderSource, HttpSource, Source
from neuron_desk.data.store import Store, StoredBody
from neuron_desk.data.validation import RULES_VERSION, Accepted, accept, accept_stored

if TYPE_CHECKING:  # httpx loads with the first network source (stored neurons need none)
    import httpx

logger = logging.getLogger(__name__)

INLINE_BYTES = 512 * 1024
"""Stored bodies (compressed, all kinds asked at once) up to this size are inflated and
checked on the caller's thread: a GPT-2 XL neuron's five files (~270 KB stored) take ~3-5 ms,
and the parse holds the GIL wherever it runs, while handing them to a worker thread and back
costs ~1 ms more on a busy machine. Larger ones go to a worker thread, where the GIL's switch
interval lets the app's window run between slices."""

ABSENT_TTL_S = 7 * 24 * 3600.0
"""How long a file the source answered 404 for is taken as absent before it is asked again."""
STORE_WAIT_S = 2.0
"""How long closing the service waits for texts the checker processes accepted to be stored
(they come right after the summaries: compressing forty takes ~50 ms)."""

T = TypeVar("T")
FileKey = tuple[NeuronRef, Kind]
Shared = tuple["asyncio.Task[T]", list[int]]
"""A task several callers wait for, and how many wait (the last one leaving cancels it)."""


async def _shared(
    inflight: dict[FileKey, Shared[T]], key: FileKey, make: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """Join the task for `key`, starting it if none runs; it is cancelled only when every
    caller waiting for it was cancelled."""
    entry = inflight.get(key)
    if entry is None:
        entry = _start_shared(inflight, key, make())
    task, waiters = entry
    waiters[0] += 1
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done() and waiters[0] == 1:
            task.cancel()
        raise
    finally:
        waiters[0] -= 1


def _start_shared(
    inflight: dict[FileKey, Shared[T]], key: FileKey, work: Coroutine[Any, Any, T]
) -> Shared[T]:
    """Start the task for `key` that `_shared` callers join (none waits for it yet)."""
    task = asyncio.ensure_future(work)
    entry: Shared[T] = (task, [0])
    inflight[key] = entry
    task.add_done_callback(lambda _task: inflight.pop(key, None))
    return entry


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """A parsed file and where it came from: store, bundled, network or folder."""

    value: T
    origin: str
    fetched_at: float
    repaired: str = ""
    """What validation replaced in the file (invalid UTF-8, lone surrogates), or ""."""


@dataclass
class NeuronData:
    """Everything known about one neuron; a kind that failed holds its error instead."""

    dataset: Dataset
    ref: NeuronRef
    record: Fetched[NeuronRecord] | NeuronDeskError | None = None
    explanations: Fetched[NeuronSimulationResults] | NeuronDeskError | None = None
    related: Fetched[RelatedNeurons] | NeuronDeskError | None = None
    tokens_by_activation: Fetched[TokenLookupTableSummaryOfNeuron] | NeuronDeskError | None = None
    tokens_by_weight: Fetched[WeightBasedSummaryOfNeuron] | NeuronDeskError | None = None

    def of_kind(self, kind: Kind) -> Fetched[Any] | NeuronDeskError | None:
        """What was had of one kind: the file, the error that kept it away, or None."""
        value: Fetched[Any] | NeuronDeskError | None = getattr(self, _FIELD_OF_KIND[kind])
        return value

    def errors(self) -> dict[str, str]:
        """The message of every kind that failed, by kind."""
        return {
            kind.value: str(value)
            for kind in Kind
            if isinstance(value := self.of_kind(kind), NeuronDeskError)
        }


_FIELD_OF_KIND = {
    Kind.ACTIVATIONS: "record",
    Kind.EXPLANATIONS: "explanations",
    Kind.RELATED_NEURONS: "related",
    Kind.TOKENS_BY_ACTIVATION: "tokens_by_activation",
    Kind.TOKENS_BY_WEIGHT: "tokens_by_weight",
}


@dataclass
class PrefetchProgress:
    """Counts so far of a prefetch run."""

    total: int
    done: int = 0
    fetched: int = 0
    already: int = 0
    absent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    failed_files: list[tuple[NeuronRef, Kind, str]] = field(default_factory=list)
    """(neuron, kind, reason) of every file that failed, for the failure record."""


class NeuronService:
    """Reads neuron files store-first; fetches and stores on a miss unless offline."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        *,
        offline: bool = False,
        timeout_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
        http_retries: int = 3,
        http_backoff_s: float = 0.5,
        file_time_s: float = 120.0,
        absent_ttl_s: float = ABSENT_TTL_S,
        checker_processes: int | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.offline = offline
        self._timeout_s = timeout_s
        self._http = http
        self._owns_http = http is None
        self._http_retries = http_retries
        self._http_backoff_s = http_backoff_s
        self._file_time_s = file_time_s
        self.absent_ttl_s = absent_ttl_s
        self._bundled: dict[str, Store] = {}
        self._shipped = frozenset(bundled_dataset_files())
        """The bundled datasets shipped with the app. Their bodies are read as exact copies of
        the current rules (`accept_stored`): the app's builder made them through `accept`, zlib
        or zstd checksums guard them, and a test accepts every one of them as exact
        (tests/data/test_stored_copies.py)."""
        self._sources: dict[str, Source] = {}
        self._inflight: dict[FileKey, Shared[Fetched[Any]]] = {}
        self._summarizing: dict[FileKey, Shared[Rows]] = {}
        """Files being fetched for their summary only (`first_published`)."""
        self._storing: dict[FileKey, asyncio.Future[None]] = {}
        """Files whose summary was given, being stored (their text is still to come from the
        checker process, or being written): done once stored, or once it is known it will
        not be."""
        self._arrived: list[tuple[FileKey, bytes, Rows, int, asyncio.Future[None]]] = []
        """Texts from the checker processes waiting to be written (all in one transaction)."""
        self._writing: asyncio.Task[None] | None = None
        if checker_processes is None:  # two parse at once on a machine of two cores or more
            checker_processes = min(2, os.cpu_count() or 1)
        self._checker = Checker(checker_processes) if checker_processes > 0 else None
        """Fetches and checks files for a summary in other processes (started by
        `expect_summaries` or the first summary asked; a file asked while they start waits
        for them, and is checked here if they cannot start or fail; None: always here). A
        prefetch never starts them."""
        self._available: dict[tuple[str, int | None], tuple[Any, list[NeuronRef]]] = {}
        """Neurons with data per (dataset, layer), with the stores' versions they were read at."""
        self.explanations = Explanations(store)

    @property
    def checker(self) -> Checker | None:
        """The checker processes of summaries (None: every file is checked here)."""
        return self._checker

    # --- reading ---

    async def get(self, ref: NeuronRef, kind: Kind) -> Fetched[Any]:
        """The parsed file, from the store, the bundled sample or the source."""
        ds = self.registry.get(ref.dataset)
        ds.check(ref.layer, ref.index)
        if kind not in ds.kinds:
            raise NotFound(f"{ds.title} has no {ds.label_of(kind)} files")
        key: FileKey = (ref, kind)
        busy = key in self._inflight or key in self._summarizing or key in self._storing
        if not busy:
            # as a hand-over did, let tasks started before this one go first: without it, the
            # neurons of a batch (each reading its record) would all run before its probe
            await asyncio.sleep(0)
            bodies = self._stored_bodies(ds, ref, [kind])  # a stored copy: no task, no thread
            if kind in bodies and len(bodies[kind][0].blob) <= INLINE_BYTES:
                stored = self._checked_stored(ds, ref, bodies)[kind]
                if isinstance(stored, NeuronDeskError):
                    raise stored
                return stored
        return await _shared(self._inflight, key, lambda: self._load(ds, ref, kind))

    async def neuron(self, ref: NeuronRef) -> NeuronData:
        """All kinds of one neuron at once; per-kind failures are kept, not raised.

        What the store (or the bundled sample) holds is read in one query and checked at once
        (`_stored_kinds`: no hand-over to a thread per kind); the rest, and kinds already being
        fetched, go through `get`.
        """
        ds = self.registry.get(ref.dataset)
        ds.check(ref.layer, ref.index)
        data = NeuronData(ds, ref)
        wanted = [k for k in ds.kinds if (ref, k) not in self._inflight]
        had = await self._stored_kinds(ds, ref, wanted) if wanted else {}
        for kind, value in had.items():
            setattr(data, _FIELD_OF_KIND[kind], value)

        async def one(kind: Kind) -> None:
            try:
                if kind in wanted:  # not in the store: not looked for there again
                    value: Fetched[Any] | NeuronDeskError = await _shared(
                        self._inflight, (ref, kind), lambda: self._load(ds, ref, kind, looked=True)
                    )
                else:
                    value = await self.get(ref, kind)
            except NeuronDeskError as exc:  # a missing, malformed or unreachable file
                value = exc
            setattr(data, _FIELD_OF_KIND[kind], value)

        await asyncio.gather(*(one(kind) for kind in Kind if kind not in had))
        return data

    async def _stored_kinds(
        self, ds: Dataset, ref: NeuronRef, kinds: list[Kind]
    ) -> dict[Kind, Fetched[Any] | NeuronDeskError]:
        """Every kind of `kinds` the store, else the bundled sample, holds for `ref`, checked at
        the border (a refused copy is its error, as `get` raises it).

        The rows are read here (one query per store); bodies up to `INLINE_BYTES` stored are
        inflated and checked here too, larger ones in a worker thread.
        """
        bodies = self._stored_bodies(ds, ref, kinds)
        if sum(len(body.blob) for body, _ in bodies.values()) <= INLINE_BYTES:
            return self._checked_stored(ds, ref, bodies)
        return await asyncio.to_thread(self._checked_stored, ds, ref, bodies)

    def _stored_bodies(
        self, ds: Dataset, ref: NeuronRef, kinds: list[Kind]
    ) -> dict[Kind, tuple[StoredBody, str]]:
        """The stored bodies of `kinds` (still compressed) and where each is: "store", or
        "bundled" for what only the bundled sample has."""
        bodies: dict[Kind, tuple[StoredBody, str]] = {}
        places = [(self.store, "store")]
        if ds.bundled:
            places.append((self._bundled_store(ds), "bundled"))
        for store, origin in places:
            missing = [k.value for k in kinds if k not in bodies]
            if missing:
                for name, body in store.get_files(ref, missing).items():
                    bodies[Kind(name)] = (body, origin)
        return bodies

    @staticmethod
    def _checked_stored(
        ds: Dataset, ref: NeuronRef, bodies: dict[Kind, tuple[StoredBody, str]]
    ) -> dict[Kind, Fetched[Any] | NeuronDeskError]:
        found: dict[Kind, Fetched[Any] | NeuronDeskError] = {}
        for kind, (body, origin) in bodies.items():
            described = f"the stored {ds.label_of(kind)}" if origin == "store" else "bundled sample"
            try:
                checked = accept_stored(
                    kind,
                    body.text(),
                    dataset=ds,
                    ref=ref,
                    source=described,
                    checked=body.checked,
                )
            except NeuronDeskError as exc:
                found[kind] = exc
            else:
                found[kind] = Fetched(checked.value, origin, body.fetched_at, checked.repaired)
        return found

    async def _load(
        self, ds: Dataset, ref: NeuronRef, kind: Kind, *, looked: bool = False
    ) -> Fetched[Any]:
        """The file from the store (unless just `looked` for there), the bundled sample or
        the dataset's source."""
        stored = None if looked else (await self._stored_kinds(ds, ref, [kind])).get(kind)
        if stored is None and ds.bundled:
            sample = ds.title if "sample" in ds.title.lower() else f"the {ds.title} sample"
            raise NotFound(f"{sample} has no {ds.label_of(kind)} for {ref.short}")
        key: FileKey = (ref, kind)
        if stored is None and (key in self._summarizing or key in self._storing):
            # the same file is being fetched for its summary: wait for it to be stored
            await self._summary_stored(key)
            stored = (await self._stored_kinds(ds, ref, [kind])).get(kind)
        if isinstance(stored, NeuronDeskError):
            raise stored
        if stored is not None:
            return stored
        source, relative, body = await self._fetch(ds, ref, kind)
        checked = await asyncio.to_thread(
            self._accept_and_keep, ds, ref, kind, body, source.origin, relative
        )
        return Fetched(checked.value, source.origin, time.time(), checked.repaired)

    async def _fetch(self, ds: Dataset, ref: NeuronRef, kind: Kind) -> tuple[Source, str, bytes]:
        """The body of a file the store does not hold, from the dataset's source (NotFound,
        NotAvailableOffline or SourceUnavailable, each saying which file)."""
        self._may_fetch(ds, ref, kind)
        source = self._source(ds)
        relative = kind.relative_path(ref.layer, ref.index)
        with self._source_errors(ds, ref, kind):
            body = await source.fetch(relative)
        return source, relative, body

    def _may_fetch(self, ds: Dataset, ref: NeuronRef, kind: Kind) -> None:
        """Raise if the file is known to be absent, or cannot be fetched while offline."""
        where = f"{ds.unit} {ref.short}"
        if self.store.absent_since(ref, kind.value, self.absent_ttl_s):
            raise NotFound(f"{where} of {ds.title} has no {ds.label_of(kind)}")
        if self.offline:
            raise NotAvailableOffline(
                f"the {ds.label_of(kind)} of {where} are not available offline"
                if kind is not Kind.EXPLANATIONS
                else f"the published explanation of {where} is not available offline"
            )

    @contextlib.contextmanager
    def _source_errors(self, ds: Dataset, ref: NeuronRef, kind: Kind) -> Iterator[None]:
        """A source's NotFound (remembered as absent) and SourceUnavailable, said for the
        user: which file of which neuron, and what to do."""
        where = f"{ds.unit} {ref.short}"
        try:
            yield
        except NotFound:
            self._keep(self.store.mark_absent, ref, kind.value)
            raise NotFound(f"{where} of {ds.title} has no {ds.label_of(kind)}") from None
        except SourceUnavailable as exc:
            failure = SourceUnavailable(
                f"could not fetch the {ds.label_of(kind)} of {where}: {exc}. "
                "Check the connection, or switch to offline mode to browse stored neurons."
            )
            failure.reason = str(exc)
            raise failure from None

    # --- summaries: what the related-neurons dock needs, checked in the checker process ---

    def expect_summaries(self, dataset: str) -> None:
        """Start the checker processes now (in the background) if summaries of `dataset`'s
        files will be asked soon: a network dataset with related neurons, online."""
        ds = self.registry.get(dataset)
        if (
            self._checker is not None
            and not self.offline
            and ds.base_url is not None
            and not ds.bundled
            and Kind.RELATED_NEURONS in ds.kinds
            and Kind.EXPLANATIONS in ds.kinds
        ):
            self._checker.start()

    async def first_published(self, ref: NeuronRef) -> tuple[str, float | None] | None:
        """The first explanation of a neuron's published file and its preferred score (None
        if the file lists none); raises as `get` does when the file cannot be had.

        A file not stored is fetched and checked by a checker process (`data/checker.py`:
        the app's thread is not held while forty of them come in; here if none can run)
        and stored as accepted; a stored, bundled or folder file, or one being fetched for `get`,
        is read through `get`. Concurrent asks for one file share one fetch.
        """
        ds = self.registry.get(ref.dataset)
        ds.check(ref.layer, ref.index)
        kind = Kind.EXPLANATIONS
        if kind not in ds.kinds:
            raise NotFound(f"{ds.title} has no {ds.label_of(kind)} files")
        key: FileKey = (ref, kind)
        if key in self._storing:  # its summary was just given: read it once it is stored
            await asyncio.shield(self._storing[key])
        if key not in self._summarizing and (  # one under way (started at once) is joined
            ds.base_url is None
            or ds.bundled
            or key in self._inflight
            or self.store.has_file(ref, kind.value)
        ):
            fetched = await self.get(ref, kind)
            rows = summary_rows(kind, fetched.value)
        else:
            rows = await _shared(self._summarizing, key, lambda: self._summarize(ds, ref, kind))
        return rows[0] if rows else None

    def start_first_published(self, refs: Iterable[NeuronRef]) -> None:
        """Send the fetches of these neurons' published explanations to the checker processes
        now, before the event loop turns again (a window painting a neuron between turns held
        forty requests back ~40 ms), all at once; `first_published` of each joins its fetch.
        Those stored, being had already, or that cannot go to a checker process now are left
        to it, and so is everything while no checker process is ready yet (what is asked of
        one starting waits in its pipe, not on the wire)."""
        if self._checker is None or not self._checker.ready():
            return
        kind = Kind.EXPLANATIONS
        wanted: dict[str, list[tuple[str, NeuronRef]]] = {}
        for ref in refs:
            key: FileKey = (ref, kind)
            ds = self.registry.get(ref.dataset)
            if (
                kind not in ds.kinds
                or ds.base_url is None
                or ds.bundled
                or key in self._inflight
                or key in self._summarizing
                or key in self._storing
            ):
                continue
            try:
                ds.check(ref.layer, ref.index)
                self._may_fetch(ds, ref, kind)
            except NeuronDeskError:
                continue  # first_published finds out, and says why
            if not self.store.has_file(ref, kind.value):
                relative = kind.relative_path(ref.layer, ref.index)
                wanted.setdefault(ds.name, []).append((relative, ref))
        for name, files in wanted.items():
            ds = self.registry.get(name)
            assert ds.base_url is not None
            try:
                sent = self._checker.send_fetches(
                    kind, ds.base_url, files, dataset=ds, http=self._http_options()
                )
            except CheckerUnavailable:
                return  # first_published finds out
            for (_, ref), asked in zip(files, sent, strict=True):
                task, _ = _start_shared(
                    self._summarizing, (ref, kind), self._summarize(ds, ref, kind, asked)
                )
                task.add_done_callback(asked.forget)  # e.g. cancelled before it began

    def _send_to_checker(self, ds: Dataset, ref: NeuronRef, kind: Kind) -> Asked:
        if self._checker is None:
            raise CheckerUnavailable("checked in this process (no checker processes)")
        assert ds.base_url is not None
        relative = kind.relative_path(ref.layer, ref.index)
        return self._checker.send_fetch(
            kind, ds.base_url, relative, dataset=ds, ref=ref, http=self._http_options()
        )

    async def _summarize(
        self, ds: Dataset, ref: NeuronRef, kind: Kind, asked: Asked | None = None
    ) -> Rows:
        """Fetch and check the file in the checker process (neither the body's arrival nor its
        parse holds this process's GIL), store what it accepted; here if it cannot. `asked`:
        the request already sent (`start_first_published`)."""
        self._may_fetch(ds, ref, kind)
        try:
            # a process still starting takes the file once ready (it waits in its pipe): the
            # first neuron's forty files checked here instead cost this process 0.4-0.65 s
            # of CPU and took longer (1.0-1.1 s against 0.5-0.65 s, load 2.5-5)
            if asked is None:
                asked = self._send_to_checker(ds, ref, kind)
            with self._source_errors(ds, ref, kind):
                checked = await asked.answer()
        except CheckerUnavailable as exc:
            logger.info("fetching and checking %s of %s here: %s", kind.label, ref.short, exc)
            source, relative, body = await self._fetch(ds, ref, kind)
            accepted = await asyncio.to_thread(
                self._accept_and_keep, ds, ref, kind, body, source.origin, relative
            )
            return summary_rows(kind, accepted.value) or []
        rows = checked.rows or []
        assert checked.stored is not None
        self._store_when_sent(ref, kind, checked.stored, rows, checked.exact)
        return rows  # shown now: the text is stored once the checker process sent it

    async def _summary_stored(self, key: FileKey) -> None:
        """Wait until a summary fetched for `key` is stored (or known not to be)."""
        summarizing = self._summarizing.get(key)
        if summarizing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(summarizing[0])
        storing = self._storing.get(key)
        if storing is not None:
            await asyncio.shield(storing)

    def _store_when_sent(
        self,
        ref: NeuronRef,
        kind: Kind,
        text: asyncio.Future[bytes | None],
        rows: Rows,
        exact: int,
    ) -> None:
        """Store a file the checker process accepted once its compressed text comes; texts
        that come together are written in one transaction (`_write_arrived`)."""
        key: FileKey = (ref, kind)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._storing[key] = done

        def arrived(text: asyncio.Future[bytes | None]) -> None:
            body = None if text.cancelled() else text.result()
            if body is None:  # the process ended first: not stored (fetched again if asked)
                logger.info("not stored: the checker process did not send %s of %s", kind, ref)
                self._stored(key, done)
                return
            self._arrived.append((key, body, rows, exact, done))
            if self._writing is None:
                self._writing = asyncio.ensure_future(self._write_arrived())

        text.add_done_callback(arrived)

    def _stored(self, key: FileKey, done: asyncio.Future[None]) -> None:
        if self._storing.get(key) is done:
            del self._storing[key]
        if not done.done():
            done.set_result(None)

    async def _write_arrived(self) -> None:
        """Write what arrived, in one transaction (in a worker thread), until none is left."""
        try:
            while self._arrived:
                batch, self._arrived = self._arrived, []
                try:
                    try:
                        asyncio.get_running_loop()
                    except RuntimeError:  # a last pass of Qt's events after the loop stopped
                        self._keep_checked(batch)
                    else:
                        await asyncio.to_thread(self._keep_checked, batch)
                finally:
                    for key, *_, done in batch:
                        self._stored(key, done)
        finally:
            self._writing = None

    def _http_options(self) -> dict[str, float]:
        """How the checker process's HTTP client fetches: as this service's own."""
        return {
            "timeout_s": self._timeout_s,
            "retries": self._http_retries,
            "backoff_s": self._http_backoff_s,
            "file_time_s": self._file_time_s,
        }

    def _keep_checked(
        self, batch: list[tuple[FileKey, bytes, Rows, int, asyncio.Future[None]]]
    ) -> None:
        """Store files the checker process accepted (each text as accepted, compressed there,
        with the rules' version that accepted it as exact), in one transaction, and index
        them."""
        origin = HttpSource.origin
        files = [(ref, kind.value, body, origin, exact) for (ref, kind), body, _, exact, _ in batch]
        if not self._keep(self.store.put_compressed_many, files):
            return  # none of them stored: none indexed either
        for (ref, kind), _, rows, _, _ in batch:
            if kind is Kind.EXPLANATIONS:
                self._keep(self.explanations.replace_published, ref, rows)

    def _accept_and_keep(
        self, ds: Dataset, ref: NeuronRef, kind: Kind, body: bytes, origin: str, relative: str
    ) -> Accepted:
        """Check a fetched body and store it (in a worker thread: compressing a large file
        lets go of the GIL, and the event loop is not held while many files come in)."""
        checked = accept(kind, body, dataset=ds, ref=ref, source=f"{origin} file {relative}")
        self._keep(self.store.put_file, ref, kind.value, checked.text, origin, checked.checked)
        if kind is Kind.EXPLANATIONS:
            self._keep(self.explanations.index_published, ref, checked.value)
        return checked

    def _keep(self, write: Callable[..., None], *args: Any) -> bool:
        """Write to the store if it can be written (True if written); a full or read-only
        store only warns, so what was fetched is still shown."""
        try:
            write(*args)
        except StoreError as exc:
            logger.warning("not stored: %s", exc)
            return False
        return True

    def _bundled_store(self, ds: Dataset) -> Store:
        assert ds.bundled is not None
        if ds.name not in self._bundled:
            path = Path(ds.bundled)
            shipped = RULES_VERSION if path in self._shipped else 0
            self._bundled[ds.name] = Store.open_read_only(path, checked_as=shipped)
        return self._bundled[ds.name]

    def _source(self, ds: Dataset) -> Source:
        """The dataset's source, one per dataset (it remembers an unreachable host)."""
        source = self._sources.get(ds.name)
        if source is None:
            source = self._sources[ds.name] = self._new_source(ds)
        return source

    def _new_source(self, ds: Dataset) -> Source:
        if ds.folder:
            return FolderSource(Path(ds.folder))
        assert ds.base_url is not None
        if self._http is None:
            import httpx

            from neuron_desk.core.transport import pooled_transport

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, 10.0)),
                follow_redirects=True,
                transport=pooled_transport(HTTP_CONNECTIONS),
            )
        return HttpSource(
            ds.base_url,
            self._http,
            retries=self._http_retries,
            backoff_s=self._http_backoff_s,
            file_time_s=self._file_time_s,
        )

    # --- listing, prefetch, cache ---

    def available_neurons(self, dataset: str, layer: int | None = None) -> list[NeuronRef]:
        """Neurons with activation records in the store or the bundled sample, in order (kept
        until the store's files change: the app asks on every neuron shown)."""
        ds = self.registry.get(dataset)
        version = self.store.files_version()  # the bundled sample never changes
        kept = self._available.get((ds.name, layer))
        if kept is not None and kept[0] == version:
            return list(kept[1])
        found = set(self.store.stored_neurons(ds.name, Kind.ACTIVATIONS.value, layer))
        if ds.bundled:
            found |= set(
                self._bundled_store(ds).stored_neurons(ds.name, Kind.ACTIVATIONS.value, layer)
            )
        listed = sorted(found)
        if len(self._available) > 256:
            self._available.clear()
        self._available[(ds.name, layer)] = (version, listed)
        return list(listed)

    async def prefetch(
        self,
        dataset: str,
        neurons: Iterable[NeuronRef],
        kinds: Iterable[Kind] | None = None,
        *,
        concurrency: int = 8,
        progress: Callable[[PrefetchProgress], None] | None = None,
        recheck_absent: bool = False,
    ) -> PrefetchProgress:
        """Fetch and store many files; already stored ones are skipped (so a rerun resumes).

        A file that fails (unreachable, refused by validation) is counted and its reason kept;
        the others go on. `recheck_absent`: ask again for files the source answered 404 for.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        ds = self.registry.get(dataset)
        wanted = [k for k in (kinds or ds.kinds) if k in ds.kinds]
        jobs = [(ref, kind) for ref in neurons for kind in wanted]
        for ref, _ in jobs:
            if ref.dataset != ds.name:
                raise DataError(f"{ref} is not a neuron of {ds.name}")
            ds.check(ref.layer, ref.index)
        report = PrefetchProgress(total=len(jobs))
        semaphore = asyncio.Semaphore(concurrency)
        ttl = 0.0 if recheck_absent else self.absent_ttl_s

        async def one(ref: NeuronRef, kind: Kind) -> None:
            async with semaphore:
                if self.store.get_file(ref, kind.value) is not None:
                    report.already += 1
                elif not ds.bundled and self.store.absent_since(ref, kind.value, ttl):
                    report.absent += 1
                else:
                    try:
                        if recheck_absent:
                            self._keep(self.store.clear_absent, ref, kind.value)
                        await self.get(ref, kind)
                        report.fetched += 1
                    except NotFound:
                        report.absent += 1
                    except NeuronDeskError as exc:  # unreachable, refused, store full
                        report.failed += 1
                        reason = getattr(exc, "reason", None) or str(exc)
                        report.errors.append(f"{ref.short} {kind.value}: {reason}")
                        report.failed_files.append((ref, kind, reason))
                report.done += 1
                if progress is not None:
                    progress(report)

        await asyncio.gather(*(one(*job) for job in jobs))
        return report

    async def aclose(self) -> None:
        """Cancel fetches in flight, store what the checker processes accepted (at most
        `STORE_WAIT_S`), close the HTTP client, the checker and bundled stores."""
        for task, _ in [*self._inflight.values(), *self._summarizing.values()]:
            task.cancel()
        if self._storing:
            await asyncio.wait(list(self._storing.values()), timeout=STORE_WAIT_S)
        if self._checker is not None:
            self._checker.close()
            self._checker = Checker(self._checker.processes)  # a later loop starts anew
        if self._http is not None and self._owns_http:
            await self._http.aclose()
            self._http = None  # a later event loop gets a client of its own
        self._sources.clear()
        for store in self._bundled.values():
            store.close()
        self._bundled.clear()
