"""The facade every operation goes through (as Anki's `Collection`): the CLI and the app both
build one `Desk`, and ask it what they would otherwise assemble from the layers below.

A desk owns the store, the registry, the neuron service, the endpoint profiles and one LLM
backend per profile. It answers, once for every caller: a neuron's data and explanations,
exports with their provenance, search, the best results of a dataset, cache statistics and
clearing, runs (explain, score, estimate, batch) and their token usage.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuron_desk.core.errors import NotAvailableOffline, NotFound, StoreError
from neuron_desk.core.model import ActivationRecord, NeuronRecord, NeuronSimulationResults
from neuron_desk.core.paths import Paths
from neuron_desk.core.refs import NeuronRef
from neuron_desk.core.scores import best_of
from neuron_desk.data.explanations import (
    ExplanationRow,
    Explanations,
    NeuronExplanation,
    UserRecord,
    UserRecords,
    neuron_explanations,
)
from neuron_desk.data.exports import (
    NeuronExport,
    export_of,
    generated_exports,
    write_export,
    write_exports,
)
from neuron_desk.data.foreign import ForeignImport, is_imported, store_import
from neuron_desk.data.foreign.delphi import read_results
from neuron_desk.data.foreign.neuronpedia import import_export
from neuron_desk.data.registry import Dataset, Kind, Registry
from neuron_desk.data.service import Fetched, NeuronData, NeuronService, PrefetchProgress
from neuron_desk.data.store import Store

if TYPE_CHECKING:  # the LLM stack and the runs load when first used, not to open a neuron
    from neuron_desk.llm.ledger import UsageTotal
    from neuron_desk.llm.profiles import Profile, ProfileConfig
    from neuron_desk.llm.session import EndpointBackend
    from neuron_desk.runs.batch import BatchSpec, BatchSummary, Progress
    from neuron_desk.runs.options import RunOptions
    from neuron_desk.runs.run import NeuronRun, ScoreOutcome
    from neuron_desk.runs.staged import ExportReport, FileLimits, ImportReport

if TYPE_CHECKING:
    from neuron_desk.builder.live import TextProbe


@dataclass(frozen=True)
class StoreImport:
    """What importing another store brought: results (provenance kept) and cached responses."""

    path: str
    results: int
    responses: int


FETCH_FAILURES = "fetch-failures:"
"""Prefix of the meta entry that keeps, per dataset, the files a fetch could not store."""
PROBE_MODEL = "probe-model:"
"""Prefix of the meta entry that keeps, per dataset, the model chosen to test text with."""


class Desk:
    """The store, datasets, neuron service, profiles and runs of one user."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        service: NeuronService,
        *,
        paths: Paths | None = None,
        profiles: ProfileConfig | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.service = service
        self.paths = paths or Paths.from_env()
        self.explanations = Explanations(store)
        self.user_records = UserRecords(store)
        self._probes: dict[str, TextProbe] = {}
        self._profiles = profiles
        self._backends: dict[str, EndpointBackend] = {}

    @classmethod
    def open(
        cls,
        paths: Paths | None = None,
        *,
        offline: bool = False,
        bundled: list[Path] | None = None,
        **service_options: Any,
    ) -> Desk:
        """Open the user's store (creating it) and everything over it."""
        paths = paths or Paths.from_env()
        store = Store.open(paths.store)
        registry = Registry(store, bundled=bundled)
        service = NeuronService(registry, store, offline=offline, **service_options)
        return cls(store, registry, service, paths=paths)

    # --- datasets and neurons ---

    @property
    def offline(self) -> bool:
        """Whether only stored and bundled data is read (misses fail at once)."""
        return self.service.offline

    @offline.setter
    def offline(self, offline: bool) -> None:
        self.service.offline = offline

    def dataset(self, name: str) -> Dataset:
        """The dataset called `name` (UnknownDataset if none)."""
        return self.registry.get(name)

    def ref(self, dataset: str, layer: int, index: int) -> NeuronRef:
        """A checked reference: the dataset exists and the neuron is inside its shape."""
        ds = self.registry.get(dataset)
        ds.check(layer, index)
        return NeuronRef(ds.name, layer, index)

    async def neuron(self, ref: NeuronRef) -> NeuronData:
        """Every kind of file of a neuron (a kind that failed holds its error).

        A neuron of a network dataset lists related neurons whose explanations come next
        (the app's dock): the checker processes that fetch and check them start now, in the
        background, so that they are ready by then."""
        self.service.expect_summaries(ref.dataset)
        return await self.service.neuron(ref)

    async def record(self, ref: NeuronRef) -> NeuronRecord:
        """A neuron's activation records (raises if they can't be had)."""
        fetched = await self.service.get(ref, Kind.ACTIVATIONS)
        record: NeuronRecord = fetched.value
        return record

    def available_neurons(self, dataset: str, layer: int | None = None) -> list[NeuronRef]:
        """Neurons with activation records stored or bundled."""
        return self.service.available_neurons(dataset, layer)

    def is_sparse(self, dataset: str) -> bool:
        """Whether only some neurons of `dataset` can be shown (a bundled sample, an import
        from another tool, or any dataset while offline): then browsing moves among the
        neurons with data."""
        ds = self.registry.get(dataset)
        return self.offline or bool(ds.bundled) or is_imported(ds)

    def step_with_data(self, ref: NeuronRef, delta: int) -> NeuronRef | None:
        """The neuron with data `delta` places after `ref` (wrapping around the dataset),
        counting only neurons with data; None if the dataset has none."""
        available = self.available_neurons(ref.dataset)
        if not available:
            return None
        if delta > 0:
            place = bisect.bisect_right(available, ref) + delta - 1
        else:
            place = bisect.bisect_left(available, ref) + delta
        return available[place % len(available)]

    def nearest_with_data(self, ref: NeuronRef, count: int = 5) -> list[NeuronRef]:
        """Up to `count` neurons with data nearest to `ref`: its layer first (by index),
        then the nearest layers; `ref` itself is left out."""
        ds = self.registry.get(ref.dataset)

        def distance(other: NeuronRef) -> tuple[int, int]:
            return abs(other.layer - ref.layer), abs(other.index - ref.index)

        others = [n for n in self.available_neurons(ds.name) if n != ref]
        return sorted(others, key=distance)[:count]

    # --- explanations, search, exports ---

    def explanations_of(
        self, ref: NeuronRef, published: NeuronSimulationResults | None = None
    ) -> list[NeuronExplanation]:
        """A neuron's published explanations (given), then its own, oldest first."""
        return neuron_explanations(self.explanations, ref, published)

    def listed_explanations(self, data: NeuronData) -> list[NeuronExplanation]:
        """The explanations of a loaded neuron: its published file's, then its own."""
        return self.explanations_of(data.ref, _published(data))

    def best_explanation(self, ref: NeuronRef) -> ExplanationRow | None:
        """A neuron's best stored explanation (published ones included once indexed)."""
        return best_of(self.explanations.of(ref), lambda row: row.score)

    def start_best_known_explanations(self, refs: list[NeuronRef]) -> None:
        """Start fetching the published explanations of `refs` (neurons without a stored
        explanation, e.g. a neuron's related ones) at once; `best_known_explanation` of each
        then joins its fetch."""
        self.service.start_first_published(refs)

    async def best_known_explanation(self, ref: NeuronRef) -> tuple[str, float | None] | None:
        """A neuron's best explanation: stored, else the first of its published file (fetched
        if needed and allowed); None if it has none that can be had."""
        row = self.best_explanation(ref)
        if row is not None:
            return row.explanation, row.score
        if Kind.EXPLANATIONS not in self.registry.get(ref.dataset).kinds:
            return None
        try:  # a fetched file is checked in the checker process, off the app's thread
            return await self.service.first_published(ref)
        except (NotFound, NotAvailableOffline):
            return None

    def search(
        self, text: str, dataset: str | None = None, limit: int = 50
    ) -> list[ExplanationRow]:
        """Stored explanations (published ones of visited neurons too) matching `text`."""
        return self.explanations.search(text, dataset, limit)

    def best_results(self, dataset: str) -> list[ExplanationRow]:
        """The best generated or user explanation of every neuron of `dataset`."""
        return self.explanations.best_own(dataset)

    def export_of(self, data: NeuronData) -> NeuronExport:
        """The export of a loaded neuron (its published file's explanations and its own)."""
        return export_of(data.ref, self.listed_explanations(data))

    async def export(self, ref: NeuronRef) -> NeuronExport:
        """The export of a neuron: its published explanations, if they can be had (offline:
        if stored; else `missing` says so), and its own."""
        published = None
        missing = ""
        if Kind.EXPLANATIONS in self.registry.get(ref.dataset).kinds:
            try:
                published = (await self.service.get(ref, Kind.EXPLANATIONS)).value
            except NotAvailableOffline as exc:
                missing = str(exc)
            except NotFound:
                published = None
        export = export_of(ref, self.explanations_of(ref, published))
        export.missing = missing
        return export

    def write_export(self, export: NeuronExport, path: str | Path) -> list[Path]:
        """Write an export and its provenance sidecar; both paths."""
        return write_export(export, path)

    def export_generated(self, dataset: str, path: str | Path) -> int:
        """Every neuron of `dataset` with own explanations, one line each (and the sidecar);
        the number of neurons."""
        exports = generated_exports(self.explanations, self.registry.get(dataset).name)
        write_exports(exports, path)
        return len(exports)

    def describe(self, data: NeuronData) -> dict[str, Any]:
        """A JSON-ready summary of a loaded neuron (what `neuron-desk show --json` prints)."""
        return describe(data, self.listed_explanations(data))

    # --- testing your own text ---

    def probe_model(self, dataset: str) -> str | None:
        """The model folder or GGUF the user chose to test text on `dataset` with, if any."""
        chosen = self.store.get_json("meta", f"{PROBE_MODEL}{dataset}")
        return str(chosen) if chosen else None

    def set_probe_model(self, dataset: str, path: str | Path | None) -> None:
        """Remember (or, with None, forget) the model to test text on `dataset` with."""
        name = self.registry.get(dataset).name
        if path:
            self.store.put_json("meta", f"{PROBE_MODEL}{name}", str(path))
        else:
            self.store.delete_json("meta", f"{PROBE_MODEL}{name}")
        self._probes.pop(name, None)

    def text_probe(self, dataset: str) -> TextProbe:
        """The dataset's text probe (its model is loaded on first use, then kept)."""
        from neuron_desk.builder.live import TextProbe

        ds = self.registry.get(dataset)
        if ds.name not in self._probes:
            chosen = self.probe_model(ds.name)
            self._probes[ds.name] = TextProbe(ds, Path(chosen) if chosen else None)
        return self._probes[ds.name]

    async def probe_text(
        self, ref: NeuronRef, text: str, loading: Callable[[], object] | None = None
    ) -> ActivationRecord:
        """The unit's activations on `text` (the model runs on a worker thread; `loading()`
        is called first when the model must be loaded, which takes seconds)."""
        probe = self.text_probe(ref.dataset)
        if not probe.loaded:
            if loading is not None:
                loading()
            await asyncio.to_thread(probe.load)
        tokens, values = await asyncio.to_thread(probe.activations, ref, text)
        return ActivationRecord(tokens, values)

    async def score_on_text(
        self, run: NeuronRun, record: NeuronRecord, explanation: str, text: ActivationRecord
    ) -> ScoreOutcome:
        """Score `explanation` on the user's text: the run's simulator (calibrated on the
        unit's records, as when scoring on them) predicts the text's activations. Not stored:
        the score of one text is not the explanation's score."""
        return await run.score(record, explanation, extra={"scored_on": "your text"}, on=[text])

    def add_user_record(
        self, ref: NeuronRef, record: ActivationRecord, score: ScoreOutcome | None = None
    ) -> int:
        """Keep the activations of the user's text as a user record of the unit (apart from
        the dataset's records); its id."""
        probe = self._probes.get(ref.dataset)
        provenance: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": str(probe.model_path) if probe is not None else None,
            "unit": self.registry.get(ref.dataset).unit,
        }
        if score is not None:
            provenance["score"] = score.preferred_score()
            provenance["explanation"] = score.explanation
            provenance["scorer"] = score.provenance.get("scorer", "simulation")
            provenance["simulator"] = score.method.value if score.method else None
            provenance["simulator_model"] = score.model
        return self.user_records.add(ref, record, provenance)

    def user_records_of(self, ref: NeuronRef) -> list[UserRecord]:
        """The unit's user records (from the user's own text), oldest first."""
        return self.user_records.of(ref)

    # --- the store ---

    def cache_stats(self, dataset: str | None = None) -> dict[str, Any]:
        """Stored files per dataset and kind, cached LLM responses, and the size on disk."""
        from neuron_desk.llm.cache import ResponseCache

        return {
            "path": str(self.store.path),
            "bytes": self.store.size_bytes(),
            "files": [
                {"dataset": d, "kind": k, "count": n, "compressed_bytes": b}
                for d, k, n, b in self.store.file_stats(dataset)
            ],
            "llm_responses": ResponseCache(self.store).count(),
        }

    def record_fetch_failures(
        self, dataset: str, refs: list[NeuronRef], report: PrefetchProgress
    ) -> dict[str, str]:
        """Keep the files of a fetch that failed, with their reasons (meta "fetch-failures:"),
        dropping those of `refs` that no longer fail; the failures still recorded."""
        key = f"{FETCH_FAILURES}{dataset}"
        failures: dict[str, str] = self.store.get_json("meta", key) or {}
        asked = {ref.short for ref in refs}
        failures = {k: v for k, v in failures.items() if k.split(" ", 1)[0] not in asked}
        for ref, kind, reason in report.failed_files:
            failures[f"{ref.short} {kind.value}"] = reason
        try:
            if failures:
                self.store.put_json("meta", key, failures)
            else:
                self.store.delete_json("meta", key)
        except StoreError:
            pass  # a read-only or full store: the summary still says what failed
        return failures

    def clear_cache(self, dataset: str | None = None) -> int:
        """Forget fetched files (of one dataset) and their indexed published explanations;
        generated explanations are kept. The number of files removed."""
        if dataset is not None:
            dataset = self.registry.get(dataset).name
        count = self.store.clear_files(dataset)
        self.explanations.clear_published(dataset)
        return count

    # --- profiles, backends, runs ---

    @property
    def profiles(self) -> ProfileConfig:
        """The endpoint profiles (read from the profiles file on first use)."""
        if self._profiles is None:
            from neuron_desk.llm.profiles import ProfileConfig

            self._profiles = ProfileConfig.load(self.paths.profiles)
        return self._profiles

    async def use_profiles(self, profiles: ProfileConfig) -> None:
        """Use edited profiles from now on; the old profiles' backends are closed."""
        await self.close_backends()
        self._profiles = profiles

    def profile(self, name: str | None = None, base_url: str | None = None) -> Profile:
        """A profile by name, an ad hoc one for a base URL, or the default."""
        return self.profiles.resolve(name, base_url)

    def backend(self, profile: Profile) -> EndpointBackend:
        """The profile's backend, shared by every run through it."""
        if profile.name not in self._backends:
            from neuron_desk.llm.profiles import open_backend

            self._backends[profile.name] = open_backend(profile)
        return self._backends[profile.name]

    def run(self, profile: Profile, options: RunOptions, *, run_id: str | None = None) -> NeuronRun:
        """A run through the profile's backend, storing its results in this desk's store."""
        from neuron_desk.runs.run import NeuronRun

        return NeuronRun(
            self.backend(profile),
            options,
            store=self.store,
            profile=profile.name,
            prices=self.profiles.prices,
            run_id=run_id,
        )

    def dry_run(self, profile: Profile, options: RunOptions) -> NeuronRun:
        """A run for estimates only: its backend refuses to send anything."""
        from neuron_desk.runs.estimate import RefusingBackend
        from neuron_desk.runs.run import NeuronRun

        return NeuronRun(
            RefusingBackend(profile.endpoint_id),
            options,
            store=self.store,
            profile=profile.name,
            prices=self.profiles.prices,
        )

    async def batch(
        self,
        spec: BatchSpec,
        run: NeuronRun,
        *,
        concurrency: int = 4,
        progress: Progress | None = None,
    ) -> BatchSummary:
        """Run (or resume) a batch; its results are stored as they are made."""
        from neuron_desk.runs.batch import run_batch

        return await run_batch(
            spec, self.service, self.store, run, concurrency=concurrency, progress=progress
        )

    def staged_run(self, profile: Profile, options: RunOptions, *, run_id: str) -> NeuronRun:
        """A run of a staged batch: answered from the response cache only, it never sends."""
        refusal = (
            "a staged batch sends nothing: this response is not cached yet "
            "(export the requests again and import their results)"
        )
        from neuron_desk.runs.estimate import RefusingBackend
        from neuron_desk.runs.run import NeuronRun

        return NeuronRun(
            RefusingBackend(profile.endpoint_id, refusal),
            options,
            store=self.store,
            profile=profile.name,
            prices=self.profiles.prices,
            run_id=run_id,
        )

    async def export_requests(
        self,
        spec: BatchSpec,
        run: NeuronRun,
        directory: Path,
        *,
        limits: FileLimits | None = None,
        concurrency: int = 4,
        progress: Progress | None = None,
    ) -> tuple[ExportReport, BatchSummary]:
        """Finish the staged batch's neurons whose responses are all cached, and write the next
        stage's requests of the others to `directory` (with a manifest)."""
        from neuron_desk.runs.batch import run_batch
        from neuron_desk.runs.staged import export_pass, write_manifest

        report, finished = await export_pass(
            spec,
            self.service,
            self.store,
            run,
            directory,
            limits=limits,
            prices=self.profiles.prices,
        )
        summary = await run_batch(
            spec,
            self.service,
            self.store,
            run,
            concurrency=concurrency,
            progress=progress,
            only=set(finished),
        )
        report.finished_now = summary.explained
        report.failed += summary.failed
        report.no_data += summary.no_data
        for error in summary.errors:
            report.note(error)
        write_manifest(report, spec, run)
        return report, summary

    def import_results(
        self, paths: Sequence[Path], profile: Profile, *, run_id: str
    ) -> ImportReport:
        """Read a staged batch's output files into the response cache (their usage into the
        ledger under `run_id`, at batch prices)."""
        from neuron_desk.runs.staged import import_results

        return import_results(
            paths, self.store, profile.endpoint_id, run_id=run_id, prices=self.profiles.prices
        )

    def import_store(self, path: Path) -> StoreImport:
        """Import another store's own results (provenance kept) and its cached responses:
        how the stores of a job split across machines are merged."""
        from neuron_desk.llm.cache import ResponseCache

        other = Store.open_read_only(path, immutable=False)
        try:
            results = self.explanations.import_from(Explanations(other))
            responses = ResponseCache(self.store).import_from(ResponseCache(other))
        finally:
            other.close()
        return StoreImport(str(path), results, responses)

    def import_neuronpedia(
        self, paths: Sequence[Path], *, name: str, model: str | None = None
    ) -> ForeignImport:
        """Import Neuronpedia export folders or batch files as the latent dataset `name`."""
        return import_export(
            self.store, self.registry, list(paths), name=name, home=self.paths.home, model=model
        )

    def import_delphi(self, folder: Path, *, name: str, model: str | None = None) -> ForeignImport:
        """Import a delphi results folder (explanations, detection and fuzz scores)."""
        export = read_results(folder, model=model)
        return store_import(self.store, self.registry, export, name=name, home=self.paths.home)

    def usage(self, run: str | None = None) -> list[UsageTotal]:
        """Token usage per endpoint and model, of one run or of all."""
        from neuron_desk.llm.ledger import usage_totals

        return usage_totals(self.store, run)

    # --- closing ---

    async def close_backends(self) -> None:
        """Close every profile's backend (HTTP clients; a managed local server)."""
        backends = list(self._backends.values())
        self._backends.clear()
        for backend in backends:
            await backend.aclose()

    async def aclose(self) -> None:
        """Cancel fetches, close HTTP clients and backends (the loop must still run).

        The store stays open: a later event loop may use the desk again.
        """
        await self.service.aclose()
        await self.close_backends()

    def close(self) -> None:
        """Close the store (after `aclose`)."""
        self.store.close()


def _published(data: NeuronData) -> NeuronSimulationResults | None:
    value = data.explanations
    return value.value if isinstance(value, Fetched) else None


def describe(data: NeuronData, listed: list[NeuronExplanation]) -> dict[str, Any]:
    """A JSON-ready summary of a neuron and its listed explanations."""
    ref = data.ref
    out: dict[str, Any] = {"dataset": ref.dataset, "layer": ref.layer, "neuron": ref.index}
    out["unit"] = data.dataset.unit
    out["layer_label"] = data.dataset.layer_label(ref.layer)
    record = data.record
    if isinstance(record, Fetched):
        r: NeuronRecord = record.value
        out["max_activation"] = r.max_activation
        out["counts"] = {
            "top": len(r.most_positive_activation_records),
            "quantiles": [len(q) for q in r.random_sample_by_quantile or []],
            "random": len(r.random_sample),
        }
        out["origin"] = record.origin
    out["explanations"] = [
        {"explanation": e.explanation, "score": e.score, "source": e.source} for e in listed
    ]
    tokens: dict[str, Any] = {}
    if isinstance(data.tokens_by_activation, Fetched):
        tokens["activation"] = data.tokens_by_activation.value.pairs()[:20]
    if isinstance(data.tokens_by_weight, Fetched):
        weights = data.tokens_by_weight.value
        for name in ("input_positive", "input_negative", "output_positive", "output_negative"):
            tokens[name] = getattr(weights, name).pairs()[:20]
    out["top_tokens"] = tokens
    related: dict[str, Any] = {}
    if isinstance(data.related, Fetched):
        sides = (("upstream", data.related.value.c_fc), ("downstream", data.related.value.c_proj))
        for name, connections in sides:
            if connections is not None:
                related[name] = {
                    sign: [[n.layer_index, n.neuron_index, w] for n, w in pairs[:20]]
                    for sign, pairs in (
                        ("positive", connections.positive()),
                        ("negative", connections.negative()),
                    )
                }
    out["related"] = related
    out["errors"] = data.errors()
    return out
