"""The build: corpus → sequences → (neuron selection) → activations on disk → dataset store.

Every stage leaves its result in a work folder, so an interrupted build resumes where it
stopped when it is run again with the same model, corpus and options (a different build in the
same folder is refused). The activation pass saves its progress after every batch; its memory
is one batch plus one layer's chunk of neurons when writing. Disk use is
4 bytes × tokens × selected neurons (e.g. 131,072 tokens × 480 neurons ≈ 250 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from neuron_desk.builder import records as rec
from neuron_desk.builder.corpus import sample_sequences
from neuron_desk.builder.records import UnitStats
from neuron_desk.builder.weights import WeightFiles
from neuron_desk.core import codec
from neuron_desk.core.model import NeuronId
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import ALL_KINDS, Dataset, Dictionary, InterestingNeuron, Kind
from neuron_desk.data.store import Store
from neuron_desk.data.validation import accept

Progress = Callable[[str, int, int], None]
"""Called as progress(stage, done, total) while a stage runs."""

NEURON_CHUNK = 64


class BuildError(RuntimeError):
    """The build cannot go on (e.g. the work folder holds another build)."""


class NeuronModel(Protocol):
    """What the builder needs from a model: `hf.HfModel` (MLP neurons) and
    `latents.DictionaryModel` (a dictionary's latents at its hook points) are two."""

    name: str
    dictionary: Dictionary | None
    """The dictionary whose latents the units are, or None for neurons."""

    @property
    def n_layers(self) -> int: ...

    @property
    def n_neurons(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def vocab(self) -> list[str]: ...

    def activations(
        self,
        ids: npt.NDArray[np.int32],
        layers: Sequence[int],
        neurons: dict[int, npt.NDArray[np.int64]] | None = None,
        stats: Mapping[int, UnitStats] | None = None,
    ) -> dict[int, npt.NDArray[np.float32]]: ...

    def weight_files(
        self,
        layer: int,
        neurons: Sequence[int],
        vocab: Sequence[str],
        n_tokens: int,
        n_related: int,
    ) -> WeightFiles | None: ...


@dataclass(frozen=True)
class BuildOptions:
    """What to compute. The defaults follow the public GPT-2 datasets."""

    seq_len: int = 64
    max_sequences: int | None = None
    batch_size: int = 32
    seed: int = 0
    layers: tuple[int, ...] | None = None
    """Layers to build (None: all)."""
    neurons: tuple[int, ...] | None = None
    """Candidate neurons in each layer (None: all)."""
    top_kurtosis: int = 0
    """Per layer, keep this many candidates with the highest kurtosis ..."""
    random_neurons: int = 0
    """... plus this many random other candidates. Both 0: keep every candidate."""
    selection_sequences: int = 256
    """How many (random) sequences the kurtosis ranking is computed on."""
    selection_skip_positions: int = 0
    """The ranking ignores the first this many tokens of every sequence: in many models the
    first token's hidden state is huge (an attention sink), and units that fire only there
    would rank highest."""
    records: rec.RecordOptions = field(default_factory=rec.RecordOptions)
    n_weight_tokens: int = 50
    n_related: int = 20


@dataclass(frozen=True)
class DatasetInfo:
    """How the built dataset describes itself in the registry."""

    name: str
    title: str
    model: str
    tokenizer: str
    licence: str = ""
    description: str = ""
    interesting_top: int = 1
    """Per layer, list this many highest-kurtosis neurons as interesting."""
    interesting_random_every: int = 3
    """List the first random neuron of every n-th layer as interesting (0: none)."""
    interesting_min_active: int = 0
    """List only units that fire (> 0) in at least this many of their top records: a very
    rare latent has a high kurtosis but records that are mostly zeros."""


@dataclass(frozen=True)
class SelectedNeuron:
    """A neuron the build covers, and why it was chosen."""

    layer: int
    neuron: int
    reason: str
    """"kurtosis", "random" or "chosen"."""
    rank: int
    selection_kurtosis: float | None = None


@dataclass
class BuildResult:
    """What a finished build wrote."""

    path: Path
    dataset: Dataset
    neurons: list[SelectedNeuron]
    n_sequences: int
    n_windows: int
    seconds: float
    latents: dict[str, Any] | None = None
    """For a dictionary: dead and dense latents and reconstruction quality per hook point."""


def describe_latents(report: dict[str, Any]) -> str:
    """A few lines on the dead and dense latents of each hook point (for the terminal)."""
    lines = []
    for layer, entry in report["layers"].items():
        fvu = "n/a" if entry["fvu"] is None else f"{entry['fvu']:.4f}"
        lines.append(
            f"hook point {layer} ({entry['hook_point']}): {entry['units']} latents, "
            f"{entry['dead']} dead ({100 * entry['dead_fraction']:.1f}%), {entry['dense']} "
            f"dense (> {100 * report['dense_above']:.0f}% of {entry['tokens']} tokens), "
            f"mean L0 {entry['mean_l0']}, FVU {fvu}"
        )
    return "\n".join(lines)


def print_progress(every: float = 10.0) -> Progress:
    """A progress callback printing `stage done/total` with an ETA to stderr."""
    state: dict[str, float] = {}

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        key = f"start:{stage}"
        if key not in state:
            state[key] = now
            state[f"first:{stage}"] = done
        if done < total and now - state.get("last", 0.0) < every:
            return
        state["last"] = now
        rate = (done - state[f"first:{stage}"]) / max(now - state[key], 1e-9)
        eta = f", {(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        print(f"[{stage}] {done}/{total}{eta}", file=sys.stderr, flush=True)

    return report


def _write_json(path: Path, value: Any) -> None:
    """Atomically replace `path` with JSON text."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(temporary, path)


def _fingerprint(model: NeuronModel, corpus: Sequence[Path], options: BuildOptions) -> str:
    described = {
        "model": [model.name, model.n_layers, model.n_neurons],
        "corpus": [[str(p), p.stat().st_size] for p in corpus],
        "options": asdict(options),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class Build:
    """One build in a work folder; `run()` does (or resumes) every stage."""

    def __init__(
        self,
        model: NeuronModel,
        corpus: Sequence[Path],
        work: Path,
        options: BuildOptions,
        progress: Progress | None = None,
    ) -> None:
        self.model = model
        self.corpus = list(corpus)
        self.work = work
        self.options = options
        self.progress = progress or (lambda stage, done, total: None)
        self.layers = list(options.layers if options.layers is not None else range(model.n_layers))
        for layer in self.layers:
            if not 0 <= layer < model.n_layers:
                raise BuildError(f"the model has layers 0-{model.n_layers - 1}, not {layer}")

    # --- stages ---

    def prepare(self) -> None:
        """Claim the work folder, or check it holds this same build."""
        self.work.mkdir(parents=True, exist_ok=True)
        plan = self.work / "plan.json"
        fingerprint = _fingerprint(self.model, self.corpus, self.options)
        if plan.exists():
            if json.loads(plan.read_text())["fingerprint"] != fingerprint:
                raise BuildError(
                    f"{self.work} holds a build with another model, corpus or options: "
                    "use another work folder or delete this one"
                )
        else:
            _write_json(plan, {"fingerprint": fingerprint, "options": asdict(self.options)})

    def sequences(self) -> tuple[npt.NDArray[np.int32], int]:
        """The corpus sample (n_sequences, seq_len) and the number of windows it came from."""
        path, info = self.work / "sequences.npy", self.work / "sequences.json"
        if not info.exists():
            self.progress("tokenize", 0, len(self.corpus))
            ids, total = sample_sequences(
                self.corpus,
                self.model.encode,
                self.options.seq_len,
                self.options.max_sequences,
                self.options.seed,
            )
            if len(ids) == 0:
                raise BuildError(f"the corpus has no sequence of {self.options.seq_len} tokens")
            np.save(path, ids)
            _write_json(info, {"n_sequences": len(ids), "n_windows": total})
            self.progress("tokenize", len(self.corpus), len(self.corpus))
        return np.load(path), int(json.loads(info.read_text())["n_windows"])

    def _candidates(self) -> npt.NDArray[np.int64]:
        if self.options.neurons is None:
            return np.arange(self.model.n_neurons, dtype=np.int64)
        return np.array(sorted(set(self.options.neurons)), dtype=np.int64)

    def select(self, sequences: npt.NDArray[np.int32]) -> list[SelectedNeuron]:
        """The neurons to build, per layer: by kurtosis and at random, or every candidate."""
        path = self.work / "selected.json"
        if path.exists():
            return [SelectedNeuron(**n) for n in json.loads(path.read_text())]
        candidates = self._candidates()
        opts = self.options
        if opts.top_kurtosis == 0 and opts.random_neurons == 0:
            chosen = [
                SelectedNeuron(layer, int(n), "chosen", rank)
                for layer in self.layers
                for rank, n in enumerate(candidates, 1)
            ]
        else:
            kurtosis = self._selection_kurtosis(sequences, candidates)
            chosen = []
            for layer in self.layers:
                values = np.nan_to_num(kurtosis[layer], nan=-np.inf)
                order = np.argsort(-values, kind="stable")[: opts.top_kurtosis]
                for rank, k in enumerate(order, 1):
                    chosen.append(
                        SelectedNeuron(
                            layer, int(candidates[k]), "kurtosis", rank, float(values[k])
                        )
                    )
                rest = np.setdiff1d(np.arange(len(candidates)), order)
                rest = rest[np.isfinite(kurtosis[layer][rest])]  # live: they vary
                rng = np.random.default_rng([opts.seed, layer, 0x5E1])
                size = min(opts.random_neurons, len(rest))
                for rank, k in enumerate(rng.choice(rest, size=size, replace=False), 1):
                    value = float(kurtosis[layer][k])
                    chosen.append(
                        SelectedNeuron(
                            layer,
                            int(candidates[k]),
                            "random",
                            rank,
                            value if np.isfinite(value) else None,
                        )
                    )
        _write_json(path, [asdict(n) for n in chosen])
        return chosen

    def _selection_kurtosis(
        self, sequences: npt.NDArray[np.int32], candidates: npt.NDArray[np.int64]
    ) -> dict[int, npt.NDArray[np.float64]]:
        """Excess kurtosis of every candidate on a random subset of the sequences (resumable)."""
        opts = self.options
        rng = np.random.default_rng([opts.seed, 0x5E2])
        size = min(opts.selection_sequences, len(sequences))
        subset = np.sort(rng.choice(len(sequences), size=size, replace=False))
        state_path = self.work / "selection.npz"
        sums = np.zeros((len(self.layers), 4, len(candidates)), dtype=np.float64)
        done = 0
        if state_path.exists():
            with np.load(state_path) as state:
                sums, done = state["sums"], int(state["done"])
        neurons = {layer: candidates for layer in self.layers}
        while done < size:
            batch = sequences[subset[done : done + opts.batch_size]]
            acts = self.model.activations(batch, self.layers, neurons)
            for i, layer in enumerate(self.layers):
                sums[i] += rec.power_sums(acts[layer][:, opts.selection_skip_positions :])
            done += len(batch)
            temporary = self.work / "selection.tmp.npz"
            np.savez(temporary, sums=sums, done=done)
            os.replace(temporary, state_path)
            self.progress("select", done, size)
        count = size * (opts.seq_len - opts.selection_skip_positions)
        return {
            layer: rec.moments_from_sums(count, sums[i])[1] for i, layer in enumerate(self.layers)
        }

    def _by_layer(self, selected: list[SelectedNeuron]) -> dict[int, npt.NDArray[np.int64]]:
        by_layer: dict[int, list[int]] = {layer: [] for layer in self.layers}
        for n in selected:
            by_layer[n.layer].append(n.neuron)
        return {layer: np.array(sorted(ns), dtype=np.int64) for layer, ns in by_layer.items() if ns}

    def _activation_file(self, layer: int) -> Path:
        return self.work / f"activations-{layer}.f32"

    def collect(self, sequences: npt.NDArray[np.int32], selected: list[SelectedNeuron]) -> None:
        """Run the model over every sequence, saving the selected neurons' activations."""
        neurons = self._by_layer(selected)
        n_seq, seq_len = sequences.shape
        files = {
            layer: np.memmap(
                self._activation_file(layer),
                dtype=np.float32,
                mode="r+" if self._activation_file(layer).exists() else "w+",
                shape=(n_seq, seq_len, len(ns)),
            )
            for layer, ns in neurons.items()
        }
        state = self.work / "collect.json"
        done = int(json.loads(state.read_text())["done"]) if state.exists() else 0
        stats = self._load_stats() if self.model.dictionary is not None else None
        if stats is not None:
            done = stats[1]  # saved after the rows it counts, before collect.json
        self.progress("activations", done, n_seq)
        while done < n_seq:
            batch = sequences[done : done + self.options.batch_size]
            acts = self.model.activations(
                batch, list(neurons), neurons, None if stats is None else stats[0]
            )
            for layer, values in acts.items():
                files[layer][done : done + len(batch)] = values
            for memmap in files.values():
                memmap.flush()
            done += len(batch)
            if stats is not None:
                self._save_stats(stats[0], done)
            _write_json(state, {"done": done})
            self.progress("activations", done, n_seq)
        del files

    def _stats_file(self) -> Path:
        return self.work / "unit-stats.npz"

    def _load_stats(self) -> tuple[dict[int, UnitStats], int]:
        """Firing counts and reconstruction sums of every unit so far, and the rows counted."""
        n_units = self.model.n_neurons
        path = self._stats_file()
        if not path.exists():
            return {layer: UnitStats(n_units) for layer in self.layers}, 0
        with np.load(path) as saved:
            stats = {
                layer: UnitStats.from_state(
                    {name: saved[f"{layer}:{name}"] for name in ("firing", "target_sum", "scalars")}
                )
                for layer in self.layers
            }
            return stats, int(saved["done"])

    def _save_stats(self, stats: dict[int, UnitStats], done: int) -> None:
        arrays: dict[str, Any] = {
            f"{layer}:{name}": value
            for layer, layer_stats in stats.items()
            for name, value in layer_stats.state().items()
        }
        temporary = self.work / "unit-stats.tmp.npz"
        np.savez(temporary, **arrays, done=np.array(done))
        os.replace(temporary, self._stats_file())

    def unit_report(self) -> dict[str, Any] | None:
        """Dead and dense units and reconstruction quality per layer (dictionaries only)."""
        if self.model.dictionary is None or not self._stats_file().exists():
            return None
        stats, _ = self._load_stats()
        points = self.model.dictionary.hook_points
        return {
            "dense_above": rec.DENSE_FRACTION,
            "layers": {
                str(layer): {"hook_point": points[layer], **stats[layer].report()}
                for layer in self.layers
            },
        }

    def write(
        self,
        sequences: npt.NDArray[np.int32],
        n_windows: int,
        selected: list[SelectedNeuron],
        info: DatasetInfo,
        out: Path,
        extra_meta: dict[str, Any] | None = None,
    ) -> Dataset:
        """Write every file of every selected neuron, and the dataset's description."""
        neurons = self._by_layer(selected)
        vocab = self.model.vocab()
        n_seq, seq_len = sequences.shape
        dictionary = self._dictionary_for(out)
        staging = self.work / "dataset.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            staging.with_name(staging.name + suffix).unlink(missing_ok=True)
        store = Store.open(staging)
        shape = Dataset(
            name=info.name,
            title=info.title,
            model=info.model,
            n_layers=self.model.n_layers,
            n_neurons=self.model.n_neurons,
            kinds=ALL_KINDS,
            tokenizer=info.tokenizer,
            dictionary=dictionary,
        )
        descriptions: dict[tuple[int, int], str] = {}
        active: dict[tuple[int, int], int] = {}
        has_weights = False
        done = 0
        try:
            for layer, ns in neurons.items():
                acts = np.memmap(
                    self._activation_file(layer),
                    dtype=np.float32,
                    mode="r",
                    shape=(n_seq, seq_len, len(ns)),
                )
                for start in range(0, len(ns), NEURON_CHUNK):
                    chunk = np.array(acts[:, :, start : start + NEURON_CHUNK])
                    for k in range(chunk.shape[2]):
                        neuron = int(ns[start + k])
                        values = np.ascontiguousarray(chunk[:, :, k])
                        record = rec.neuron_record(
                            NeuronId(layer, neuron),
                            values,
                            sequences,
                            vocab,
                            self.options.records,
                            self.options.seed,
                        )
                        descriptions[layer, neuron] = rec.top_token_summary(record)
                        active[layer, neuron] = sum(
                            1
                            for r in record.most_positive_activation_records
                            if r.activations and max(r.activations) > 0
                        )
                        table = rec.token_table(values, sequences, vocab, self.options.records)
                        self._put(store, shape, Kind.ACTIVATIONS, layer, neuron, record)
                        self._put(store, shape, Kind.TOKENS_BY_ACTIVATION, layer, neuron, table)
                        done += 1
                        self.progress("records", done, len(selected))
                del acts
                files = self.model.weight_files(
                    layer,
                    [int(n) for n in ns],
                    vocab,
                    self.options.n_weight_tokens,
                    self.options.n_related,
                )
                if files is not None:
                    has_weights = True
                    for neuron, summary, links in zip(ns, *files, strict=True):
                        self._put(store, shape, Kind.TOKENS_BY_WEIGHT, layer, int(neuron), summary)
                        self._put(store, shape, Kind.RELATED_NEURONS, layer, int(neuron), links)
            kinds = [Kind.ACTIVATIONS, Kind.TOKENS_BY_ACTIVATION]
            if has_weights:
                kinds[1:1] = [Kind.RELATED_NEURONS]
                kinds.append(Kind.TOKENS_BY_WEIGHT)
            dataset = Dataset(
                name=info.name,
                title=info.title,
                model=info.model,
                n_layers=self.model.n_layers,
                n_neurons=self.model.n_neurons,
                kinds=tuple(kinds),
                tokenizer=info.tokenizer,
                licence=info.licence,
                description=info.description,
                interesting=interesting_neurons(selected, descriptions, info, active),
                dictionary=dictionary,
            )
            spec = dataset.to_spec()
            del spec["bundled"], spec["folder"], spec["base_url"]
            store.put_json("meta", "dataset", spec)
            build_meta = {
                "options": asdict(self.options),
                "n_sequences": int(n_seq),
                "n_windows": n_windows,
                "n_tokens": int(n_seq * seq_len),
                "neurons": [asdict(n) for n in selected],
                **(extra_meta or {}),
            }
            report = self.unit_report()
            if report is not None:
                build_meta["latents"] = report
            store.put_json("meta", "build", build_meta)
            store.put_json("meta", "sequences", sequences.tolist())
        finally:
            store.close()
        _compact(staging)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staging, out.with_name(out.name + ".tmp"))
        os.replace(out.with_name(out.name + ".tmp"), out)
        return dataset

    def _dictionary_for(self, out: Path) -> Dictionary | None:
        """The model's dictionary, its absolute weights folders made relative to `out`'s."""
        dictionary = self.model.dictionary
        if dictionary is None:
            return None
        folder = out.parent.resolve()
        weights = tuple(
            os.path.relpath(w, folder) if Path(w).is_absolute() else w for w in dictionary.weights
        )
        return replace(dictionary, weights=weights)

    @staticmethod
    def _put(store: Store, shape: Dataset, kind: Kind, layer: int, neuron: int, obj: Any) -> None:
        """Store a built file after the same validation as every file that comes in."""
        ref = NeuronRef(shape.name, layer, neuron)
        text = codec.dumps(obj)
        checked = accept(kind, text, dataset=shape, ref=ref, source=f"built {kind.value}")
        store.put_file(ref, kind.value, checked.text, "builder", checked.checked)


def _compact(path: Path) -> None:
    """Leave a single self-contained file: no WAL, vacuumed."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("VACUUM")
    finally:
        db.close()


def interesting_neurons(
    selected: Sequence[SelectedNeuron],
    descriptions: dict[tuple[int, int], str],
    info: DatasetInfo,
    active: dict[tuple[int, int], int] | None = None,
) -> tuple[InterestingNeuron, ...]:
    """The neurons the dataset suggests first: top kurtosis per layer, then some random ones
    (only units active in `info.interesting_min_active` of their top records)."""

    def eligible(reason: str) -> list[SelectedNeuron]:
        minimum = info.interesting_min_active
        ranked = sorted((n for n in selected if n.reason == reason), key=lambda n: n.rank)
        return [
            n
            for n in ranked
            if active is None or active.get((n.layer, n.neuron), minimum) >= minimum
        ]

    picks = []
    taken: dict[int, int] = {}
    for n in eligible("kurtosis"):
        if taken.get(n.layer, 0) < info.interesting_top:
            taken[n.layer] = taken.get(n.layer, 0) + 1
            description = descriptions.get((n.layer, n.neuron), "")
            label = f"high kurtosis #{n.rank}"
            picks.append(
                InterestingNeuron(n.layer, n.neuron, label, description, "Highest kurtosis")
            )
    every = info.interesting_random_every
    first_random: dict[int, SelectedNeuron] = {}
    for n in eligible("random"):
        first_random.setdefault(n.layer, n)
    for layer, n in first_random.items():
        if every and layer % every == 0:
            description = descriptions.get((n.layer, n.neuron), "")
            picks.append(InterestingNeuron(n.layer, n.neuron, "random", description, "Random"))
    return tuple(picks)


def build_dataset(
    model: NeuronModel,
    corpus: Sequence[Path],
    out: Path,
    work: Path,
    info: DatasetInfo,
    options: BuildOptions | None = None,
    progress: Progress | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> BuildResult:
    """Build (or resume building) a dataset store at `out`, using `work` for its state."""
    started = time.monotonic()
    build = Build(model, corpus, work, options or BuildOptions(), progress)
    build.prepare()
    sequences, n_windows = build.sequences()
    selected = build.select(sequences)
    build.collect(sequences, selected)
    dataset = build.write(sequences, n_windows, selected, info, out, extra_meta)
    return BuildResult(
        out,
        dataset,
        selected,
        len(sequences),
        n_windows,
        time.monotonic() - started,
        build.unit_report(),
    )
