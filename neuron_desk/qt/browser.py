"""Browser state with no widgets (napari's `Dims`, with Qt signals as its events): the current
neuron, back/forward history, the picked dataset, loading through the desk (the last pick
wins: a stale load is cancelled), stepping and random picks, offline mode, and the fill-in of
the related neurons' explanations. Widgets connect to its signals; it never touches one.

The related neurons' explanations are fetched all at once (at most `RELATED_AT_ONCE` in
flight), and what was fetched is kept: switching to another neuron does not cancel a fetch
(it fills the memory for when its neuron is listed again) and only what the current neuron
lists is announced. Where nothing is fetched (offline, the bundled sample, a folder) they
are looked up one after another in one task, which the next pick cancels (reads are cheap
to do again; what was looked up is kept).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from PySide6 import QtCore

from neuron_desk.core.errors import NeuronDeskError
from neuron_desk.core.model import NeuronConnections
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import NeuronExplanation
from neuron_desk.data.registry import Dataset
from neuron_desk.data.service import Fetched, NeuronData
from neuron_desk.desk import Desk
from neuron_desk.qt.asyncbridge import TaskSlots, error_message

RELATED_PER_SIGN = 10
"""Related neurons listed per direction and sign (upstream/downstream, positive/negative)."""

NOT_EXPLAINED = "not explained yet"

RELATED_AT_ONCE = 40
"""Related neurons' explanations fetched at the same time: a neuron's whole list (4 × 10), so
the dock fills in about one round trip; a fetch of an earlier neuron's list counts too."""
RELATED_KEPT = 4096
"""Related neurons' best explanations kept in memory (the oldest are forgotten first)."""

Best = tuple[str, float | None]

WELCOME_SEEN_KEY = "welcome/seen"
"""Set once the welcome page has been left: later starts open the browser directly (here, so
a start can ask without loading the welcome page and the LLM stack it needs)."""


@dataclass
class History:
    """Back/forward navigation over visited neurons."""

    items: list[NeuronRef] = field(default_factory=list)
    position: int = -1

    def visit(self, ref: NeuronRef) -> None:
        """Add `ref` after the current place (dropping the forward part)."""
        if self.position >= 0 and self.items[self.position] == ref:
            return
        del self.items[self.position + 1 :]
        self.items.append(ref)
        self.position = len(self.items) - 1

    def back(self) -> NeuronRef | None:
        """Step back; the neuron there, or None at the start."""
        if self.position > 0:
            self.position -= 1
            return self.items[self.position]
        return None

    def forward(self) -> NeuronRef | None:
        """Step forward; the neuron there, or None at the end."""
        if self.position < len(self.items) - 1:
            self.position += 1
            return self.items[self.position]
        return None


def related_connections(
    connections: NeuronConnections | None, dataset: str
) -> list[tuple[str, NeuronRef, float]]:
    """(sign, ref, weight) of one direction's listed neurons: positive then negative."""
    if connections is None:
        return []
    return [
        (sign, NeuronRef(dataset, n.layer_index, n.neuron_index), weight)
        for sign, pairs in (("+", connections.positive()), ("−", connections.negative()))
        for n, weight in pairs[:RELATED_PER_SIGN]
    ]


def related_refs(data: NeuronData) -> list[NeuronRef]:
    """The related neurons listed for a loaded neuron (upstream, then downstream), once each."""
    if not isinstance(data.related, Fetched):
        return []
    related = data.related.value
    refs: dict[NeuronRef, None] = {}
    for connections in (related.c_fc, related.c_proj):
        for _, ref, _ in related_connections(connections, data.ref.dataset):
            refs.setdefault(ref)
    return list(refs)


class BrowserState(QtCore.QObject):
    """Which neuron is shown and how it gets there; every change is announced by a signal."""

    LOAD_TASK = "browser.load"
    RELATED_TASK = "browser.related"
    RELATED_LOOKUP_TASK = "browser.related-lookup"
    """The related neurons' lookups where nothing is fetched (one task for all of them)."""
    RELATED_FETCH = "browser.related-fetch:"
    """Prefix of the task fetching one related neuron's explanation (its ref follows)."""
    LAST_NEURON_KEY = "last_neuron"
    SAVE_AFTER_MS = 500
    """The neuron shown is kept in the settings this long after the last pick (QSettings
    writes and syncs its file after every change: about 1.5 ms of the window's thread per
    switch while browsing), and when the window closes."""
    OFFLINE_KEY = "offline"

    dataset_changed = QtCore.Signal(object)
    """The picked dataset (a `Dataset`) changed."""
    loading = QtCore.Signal(object)
    """A neuron (`NeuronRef`) became current and is loading."""
    loaded = QtCore.Signal(object, object)
    """The current neuron's `NeuronData` has loaded: (ref, data)."""
    failed = QtCore.Signal(object, str)
    """A pick or a load failed: (ref, or None when no neuron was named; message)."""
    related_explained = QtCore.Signal(object, str, object)
    """A related neuron's best explanation: (related ref, text, score or None)."""
    offline_changed = QtCore.Signal(bool)

    def __init__(
        self,
        desk: Desk,
        settings: QtCore.QSettings | None = None,
        tasks: TaskSlots | None = None,
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.desk = desk
        self.settings = settings
        self.tasks = tasks if tasks is not None else TaskSlots()
        self.history = History()
        self.current: NeuronRef | None = None
        self.data: NeuronData | None = None
        """The current neuron's data once loaded (None while loading)."""
        self._dataset = desk.registry.default()
        self._known: dict[NeuronRef, Best | None] = {}
        """Related neurons' best explanations as fetched (None: it has none)."""
        self._listed: set[NeuronRef] = set()
        """The related neurons the current neuron lists (only theirs are announced)."""
        self._fetch_slots: asyncio.Semaphore | None = None
        self._fetching: set[NeuronRef] = set()
        self._lookups_left: list[NeuronRef] = []
        """What the running lookup (`_look_up_related`) has still to look up."""
        self._save_timer = QtCore.QTimer(self, singleShot=True, interval=self.SAVE_AFTER_MS)
        self._save_timer.timeout.connect(self.save_position)

    # --- the picked dataset ---

    @property
    def dataset(self) -> Dataset:
        """The picked dataset (the current neuron's, unless another was picked since)."""
        return self._dataset

    def set_dataset(self, name: str) -> None:
        """Pick a dataset (the current neuron stays until another is picked)."""
        dataset = self.desk.dataset(name)
        if dataset != self._dataset:
            self._dataset = dataset
            self.dataset_changed.emit(dataset)

    # --- navigation ---

    def go_to(self, ref: NeuronRef, *, record: bool = True) -> bool:
        """Make `ref` current and load it (cancelling the previous load); False if `ref`
        names no neuron (then `failed` says why and nothing changes)."""
        try:
            ref = self.desk.ref(ref.dataset, ref.layer, ref.index)
        except NeuronDeskError as exc:
            self.failed.emit(ref, str(exc))
            return False
        self.tasks.cancel(self.RELATED_TASK)
        self.tasks.cancel(self.RELATED_LOOKUP_TASK)  # not in this neuron's way (it is kept)
        self._listed = set()
        self.current = ref
        self.data = None
        if record:
            self.history.visit(ref)
        self.set_dataset(ref.dataset)
        if self.settings is not None:
            self._save_timer.start()  # QSettings writes its file at each change: not per pick
        self.loading.emit(ref)
        self.tasks.start(self.LOAD_TASK, self._load(ref), self._load_failed)
        return True

    def go(self, layer: int, index: int) -> bool:
        """Go to a neuron of the picked dataset."""
        return self.go_to(NeuronRef(self._dataset.name, layer, index))

    def reload(self) -> None:
        """Load the current neuron again (e.g. after switching offline mode)."""
        if self.current is not None:
            self.go_to(self.current, record=False)

    def back(self) -> bool:
        """The previous neuron in the history; False at the start."""
        ref = self.history.back()
        return ref is not None and self.go_to(ref, record=False)

    def forward(self) -> bool:
        """The next neuron in the history; False at the end."""
        ref = self.history.forward()
        return ref is not None and self.go_to(ref, record=False)

    def step(self, delta: int) -> bool:
        """The neuron `delta` places after the current one, wrapping around the dataset; in a
        sparse dataset (the bundled sample, or offline) only neurons with data count."""
        if self.current is None:
            return False
        if self.desk.is_sparse(self.current.dataset):
            target = self.desk.step_with_data(self.current, delta)
            if target is None:
                units = self.desk.dataset(self.current.dataset).units
                self.failed.emit(None, f"No {units} of this dataset have data here")
                return False
            return self.go_to(target)
        dataset = self.desk.dataset(self.current.dataset)
        size = dataset.n_neurons
        place = (self.current.layer * size + self.current.index + delta) % (
            dataset.n_layers * size
        )
        return self.go_to(NeuronRef(dataset.name, place // size, place % size))

    def next(self) -> bool:
        """The next neuron (the first of the next layer after a layer's last)."""
        return self.step(1)

    def previous(self) -> bool:
        """The previous neuron."""
        return self.step(-1)

    def random(self, rng: random.Random | None = None) -> bool:
        """A random neuron of the picked dataset: among those stored or bundled when offline
        or bundled (so it can be shown); False if there is none."""
        rng = rng or random.Random()
        dataset = self._dataset
        if self.desk.offline or dataset.bundled:
            choices = self.desk.available_neurons(dataset.name)
            if not choices:
                self.failed.emit(None, f"No {dataset.units} are available offline in this dataset")
                return False
            return self.go_to(rng.choice(choices))
        return self.go(rng.randrange(dataset.n_layers), rng.randrange(dataset.n_neurons))

    # --- offline and persistence ---

    def set_offline(self, offline: bool) -> None:
        """Switch offline mode (kept in the settings) and reload the current neuron."""
        changed = offline != self.desk.offline
        self.desk.offline = offline
        if changed:
            self._known.clear()  # "none offline" was no answer
        if self.settings is not None:
            self.settings.setValue(self.OFFLINE_KEY, offline)
        if changed:
            self.offline_changed.emit(offline)
        self.reload()

    def save_position(self) -> None:
        """Keep the current neuron in the settings (where the next start opens)."""
        self._save_timer.stop()
        if self.settings is not None and self.current is not None:
            self.settings.setValue(self.LAST_NEURON_KEY, self.current.to_json())

    @classmethod
    def saved_offline(cls, settings: QtCore.QSettings) -> bool:
        """Whether the app was offline when last closed."""
        return settings.value(cls.OFFLINE_KEY, False) in (True, "true")

    def last_neuron(self) -> NeuronRef | None:
        """The neuron shown when the app was last closed, if it still exists."""
        if self.settings is None:
            return None
        try:
            ref = NeuronRef.from_json(self.settings.value(self.LAST_NEURON_KEY))
            return self.desk.ref(ref.dataset, ref.layer, ref.index)
        except (ValueError, NeuronDeskError):
            return None

    def first_neuron(self) -> NeuronRef:
        """Where to start: the last neuron shown, else the default dataset's first
        interesting neuron, else its first available one, else its neuron 0:0."""
        last = self.last_neuron()
        if last is not None:
            return last
        dataset = self.desk.registry.default()
        if dataset.interesting:
            first = dataset.interesting[0]
            return NeuronRef(dataset.name, first.layer, first.neuron)
        available = self.desk.available_neurons(dataset.name)
        return available[0] if available else NeuronRef(dataset.name, 0, 0)

    # --- loading ---

    async def _load(self, ref: NeuronRef) -> None:
        data = await self.desk.neuron(ref)
        if ref != self.current:  # a newer neuron was picked meanwhile
            return
        self.data = data
        self.loaded.emit(ref, data)
        refs = related_refs(data)
        self._ask_related_early(ref, refs)
        if refs and ref == self.current:
            self.tasks.start(self.RELATED_TASK, self._explain_related(ref, refs))

    def _load_failed(self, _name: str, error: BaseException) -> None:
        self.failed.emit(self.current, error_message(error))

    async def _explain_related(self, ref: NeuronRef, refs: list[NeuronRef]) -> None:
        """Announce each related neuron's best explanation: stored ones and those already
        fetched at once, the others as their fetches (all started together) come back."""
        self._listed = set(refs)
        unknown: list[NeuronRef] = []
        for related in refs:
            if ref != self.current:
                return
            row = self.desk.best_explanation(related)  # own results, indexed published ones
            if row is not None:
                self.related_explained.emit(related, row.explanation, row.score)
            elif related in self._known:
                self._announce(related, self._known[related])
            elif related not in self._fetching:
                unknown.append(related)
        if not unknown:
            return
        if not self._fetched_from_network(ref.dataset):
            # A read of the store, the bundled sample or a folder each: one task for all
            # (a task per neighbour cost more in event-loop round trips than the reads).
            self.tasks.start(self.RELATED_LOOKUP_TASK, self._look_up_related(unknown))
            return
        for related in unknown:
            self._fetching.add(related)
            self.tasks.start(self.RELATED_FETCH + str(related), self._fetch_related(related))

    def _ask_related_early(self, ref: NeuronRef, refs: list[NeuronRef]) -> None:
        """Send the requests for the related neurons' explanations that will be fetched
        now, once the window filled its panes and before it paints them (`_explain_related`'s
        tasks, whose first step comes after the paint, join them): the round trip runs while
        it paints (the paint held them back ~15-40 ms, the first one ~170 ms)."""
        if not refs or ref != self.current or not self._fetched_from_network(ref.dataset):
            return
        unknown = [
            related
            for related in refs
            if related not in self._known
            and related not in self._fetching
            and self.desk.best_explanation(related) is None
        ]
        self.desk.start_best_known_explanations(unknown[:RELATED_AT_ONCE])

    def _fetched_from_network(self, dataset: str) -> bool:
        """Whether a related neuron's published explanation may come over the network (an
        online dataset with a source URL), so its fetch is worth a task of its own."""
        ds = self.desk.dataset(dataset)
        return not self.desk.offline and ds.base_url is not None and not ds.bundled

    async def _look_up_related(self, refs: list[NeuronRef]) -> None:
        """The related neurons' best explanations where nothing is fetched (offline, the
        bundled sample, a folder): one after another in one task, each kept and announced.
        The next pick cancels it (what was looked up stays kept)."""
        left = self._lookups_left = list(reversed(refs))  # this lookup's own list
        try:
            while left:
                related = left[-1]
                if related in self._known:
                    self._announce(related, self._known[related])
                else:
                    try:
                        best = await self.desk.best_known_explanation(related)
                    except NeuronDeskError:  # refused, unreadable: said, not kept
                        self._announce(related, None)
                    else:
                        self._keep(related, best)
                        self._announce(related, best)
                left.pop()
        finally:
            left.clear()

    def related_in_flight(self) -> int:
        """How many related neurons' explanations are being fetched."""
        return len(self._fetching) + len(self._lookups_left)

    async def _fetch_related(self, related: NeuronRef) -> None:
        if self._fetch_slots is None:
            self._fetch_slots = asyncio.Semaphore(RELATED_AT_ONCE)
        try:
            async with self._fetch_slots:
                best = await self.desk.best_known_explanation(related)
        except NeuronDeskError:  # unreachable, refused: said, not kept (asked again later)
            self._announce(related, None)
            return
        finally:
            self._fetching.discard(related)
        self._keep(related, best)
        self._announce(related, best)

    def _keep(self, related: NeuronRef, best: Best | None) -> None:
        self._known[related] = best
        if len(self._known) > RELATED_KEPT:
            del self._known[next(iter(self._known))]

    def _announce(self, related: NeuronRef, best: Best | None) -> None:
        if related in self._listed:
            text, score = best if best is not None else (NOT_EXPLAINED, None)
            self.related_explained.emit(related, text, score)

    def with_data(self, layer: int | None = None) -> list[NeuronRef] | None:
        """The neurons of the picked dataset with data (in `layer`), when it is sparse;
        None when every neuron can be had."""
        name = self._dataset.name
        return self.desk.available_neurons(name, layer) if self.desk.is_sparse(name) else None

    def listed_explanations(self) -> list[NeuronExplanation]:
        """The current neuron's explanations as listed (empty while loading)."""
        return self.desk.listed_explanations(self.data) if self.data is not None else []
