"""Fetching and checking files in a process of their own: `accept` in another interpreter.

Receiving a 420 KB explanations file through httpx and parsing and checking it hold the GIL
for several milliseconds; forty of them arriving at once (a neuron's related neurons, in the
app) would hold the window's thread for hundreds, since threads of one process do not run
Python at the same time. `Checker` hands such files to child processes (`python -m
neuron_desk.data.checker`, all started together when first needed, never forked from the
app): `fetch` has the child GET the file (an `HttpSource` of its own, with the caller's
timeouts, retries and caps, over `core.wire.LeanTransport`) and run the very same `accept`;
`check` sends a body the caller already has. The child sends back the verdict and what the
caller needs of the file (for an explanations file: its explanations and scores), not the
parsed model; for a fetch, the accepted text compressed as the store keeps it (~140 KB
instead of 420 KB) follows in a frame of its own once no other fetch of that child is still
to be judged (`Checked.stored`): nothing shown waits for the compression.

The rules stay those of the border: the caller stores only a text the child accepted, under
the neuron it asked about (the child echoes it back and a reply that does not match is not
used); a refusal comes back as the same `CodecError` message, a missing file as `NotFound`,
an unreachable one as `SourceUnavailable`. Whatever goes wrong with the child itself (it
cannot start, it died, it hangs) raises `CheckerUnavailable`, and the caller fetches and
checks in its own process instead: nothing is lost and nothing unchecked gets through.

Frames on the pipes (pickles are trusted: our own child): a request is two 4-byte big-endian
lengths, its pickled fields, then the body's bytes; a reply is a length and a pickle (a
fetch's verdict, then, if it was accepted, a "stored" frame with the same number).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from neuron_desk.core.errors import CodecError, NeuronDeskError, NotFound, SourceUnavailable
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Kind

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_FRAME = struct.Struct(">II")
"""A request's header: the length of its pickled fields, then of the body that follows."""
_READY = -1
"""The number of the frame a child sends once it can take requests."""
START_TIMEOUT_S = 10.0
"""How long a child may take to be ready (its imports) before it is ended and what was asked
of it is checked in the caller's process (a cold disk; a machine under heavy load)."""
MAX_FAILED_STARTS = 3
"""Children ending before they are ready after which no more are started."""
REPLY_TIMEOUT_S = 30.0
"""How long a check may take in the child before the caller checks in its own process."""
BLOB_WAIT_S = 0.25
"""How long an accepted text may wait in the child for its compression while other fetches
are still to be judged (it is compressed at once when none is)."""

Rows = list[tuple[str, float | None]]


class CheckerUnavailable(Exception):
    """The checker process cannot take or finish a check: check in this process instead."""


@dataclass(frozen=True)
class Checked:
    """What the child says of a body it accepted."""

    repaired: str
    """What validation replaced ("" for none)."""
    text: str | None
    """`check`: the text to store when something was repaired; None: the body as sent."""
    rows: Rows | None
    """An explanations file's explanations and their preferred scores, in order."""
    stored: asyncio.Future[bytes | None] | None = None
    """`fetch`: the accepted text as the store keeps it (`store.compress`d in the child, so
    the caller neither receives 420 KB of text nor compresses it: `Store.put_compressed`),
    sent after the verdict; None if it never came (the child ended or was stopped first:
    nothing is stored then)."""
    exact: int = 0
    """`Accepted.checked` of the child's `accept` (the rules' version that accepted the text
    as exact, kept with the stored copy; 0: it is checked again when read)."""


def summary_rows(kind: Kind, value: Any) -> Rows | None:
    """What a caller needs of an accepted file besides the verdict (explanations: each one's
    text and preferred score, in the file's order)."""
    if kind is not Kind.EXPLANATIONS:
        return None
    return [(e.explanation, e.get_preferred_score()) for e in value.scored_explanations]


class Checker:
    """A pool of checker processes, started on the first `start()` or `check()`."""

    def __init__(
        self,
        processes: int = 1,
        command: list[str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.processes = max(1, processes)
        self.start_timeout_s = start_timeout_s
        """How long a child may take to start (`START_TIMEOUT_S`)."""
        """How many children run once all have started."""
        self._command = command or [sys.executable, "-m", "neuron_desk.data.checker"]
        """How a child is started (tests start their own kind of child)."""
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.failed_to_start = ""
        """Why the processes could not be started ("" if they were, or were not tried)."""
        self._ended_starting = 0
        """How many children ended before they were ready (at `MAX_FAILED_STARTS`, none is
        started again: every file is checked in the caller's process)."""
        self.answered = 0
        """How many files the processes checked (accepted), for tests and figures."""
        self.sent = 0
        """How many requests were sent to the processes, for tests and figures."""
        weakref.finalize(self, _stop_all, self._children)  # a checker forgotten unclosed

    @staticmethod
    def possible() -> bool:
        """Whether a child interpreter can be started (not in a frozen app)."""
        return not getattr(sys, "frozen", False) and bool(sys.executable)

    def start(self) -> bool:
        """Start the processes now (in the background: they import while the caller goes on),
        and again any that ended; False if they cannot run here."""
        with self._lock:
            if self._closed or self.failed_to_start or not self.possible():
                return False
            ended = [c for c in self._children if not c.alive]
            self._ended_starting += sum(1 for c in ended if not c.ready)
            self._children[:] = [c for c in self._children if c.alive]
            if self._ended_starting >= MAX_FAILED_STARTS:  # e.g. a broken interpreter
                self.failed_to_start = (
                    f"the checker process ended before it was ready {self._ended_starting} times"
                )
                logger.warning("checking files in this process: %s", self.failed_to_start)
                return False
            try:
                # all at once: the first neuron's related files are asked together, and one
                # child checking them while the other still starts took 0.9-1.1 s at load 5
                # (0.5-0.65 s with both ready), most of them checked here meanwhile
                while len(self._children) < self.processes:
                    self._children.append(_Child(self._command, self.start_timeout_s))
            except OSError as exc:
                self.failed_to_start = str(exc)
                logger.warning("checking files in this process: no checker process (%s)", exc)
                return bool(self._children)
            return True

    def process_ids(self) -> list[int]:
        """The process ids of the children that are running."""
        with self._lock:
            return [c.pid for c in self._children if c.alive]

    def ready(self, every: bool = False) -> bool:
        """Whether a child is ready, or with `every` all `processes` of them (False while they
        start: requests sent meanwhile wait in a starting child's pipe, at most its
        `start_timeout_s`)."""
        with self._lock:
            up = [c.alive and c.ready for c in self._children]
            return len(up) == self.processes and all(up) if every else any(up)

    async def check(
        self, kind: Kind, body: bytes, *, dataset: Dataset, ref: NeuronRef, source: str
    ) -> Checked:
        """`accept` of `body` in a child: the `Checked` summary, or the child's `CodecError`."""
        with self._asking() as children:
            asked = self._send_to(
                children, "check", kind, dataset, ref, source, body, REPLY_TIMEOUT_S
            )
        return await self.answer(asked)

    async def fetch(
        self,
        kind: Kind,
        base_url: str,
        relative: str,
        *,
        dataset: Dataset,
        ref: NeuronRef,
        http: dict[str, float],
    ) -> Checked:
        """Fetch `relative` under `base_url` in a child (an `HttpSource` with the `http`
        options) and `accept` it there: the `Checked` summary (the accepted text, compressed,
        follows in `Checked.stored`); or the source's NotFound or SourceUnavailable, or the
        child's `CodecError`."""
        return await self.answer(
            self.send_fetch(kind, base_url, relative, dataset=dataset, ref=ref, http=http)
        )

    def send_fetch(
        self,
        kind: Kind,
        base_url: str,
        relative: str,
        *,
        dataset: Dataset,
        ref: NeuronRef,
        http: dict[str, float],
    ) -> Asked:
        """`fetch`'s request, sent now (no turn of the event loop first); its answer is
        `answer(asked)`. Raises `CheckerUnavailable` if no child can take it."""
        (asked,) = self.send_fetches(kind, base_url, [(relative, ref)], dataset=dataset, http=http)
        return asked

    def send_fetches(
        self,
        kind: Kind,
        base_url: str,
        files: list[tuple[str, NeuronRef]],
        *,
        dataset: Dataset,
        http: dict[str, float],
    ) -> list[Asked]:
        """`send_fetch` of several files, (relative path, neuron) each, shared among the
        children and written to each child's pipe at once."""
        patience = http.get("file_time_s", 120.0) + REPLY_TIMEOUT_S
        with self._asking() as children:
            return [
                self._send_to(
                    children, "fetch", kind, dataset, ref, (base_url, relative, http), b"",
                    patience,
                )
                for relative, ref in files
            ]

    @contextlib.contextmanager
    def _asking(self) -> Iterator[list[_Child]]:
        """The children that can take requests now, held while the requests are written
        (each released afterwards); raises `CheckerUnavailable` if there is none."""
        if not self.start():
            raise CheckerUnavailable(self.failed_to_start or "no checker process here")
        with self._lock:
            children = [c for c in self._children if c.alive]
        if not children:
            raise CheckerUnavailable("the checker processes ended")
        try:
            yield children
        finally:
            for child in children:
                child.release()

    def _send_to(
        self,
        children: list[_Child],
        operation: str,
        kind: Kind,
        dataset: Dataset,
        ref: NeuronRef,
        detail: Any,
        body: bytes,
        patience_s: float,
    ) -> Asked:
        """Hold a request for the child with the fewest waiting, among the ready ones and
        those started with one of them (`_soon_ready`); any child if none is ready."""
        child = min(children, key=lambda c: (not _soon_ready(c, children), len(c.pending)))
        asked = (ref.dataset, ref.layer, ref.index, kind.value)
        request = (operation, kind, dataset, ref, detail, body)
        verdict, stored = child.send(asyncio.get_running_loop(), request, asked, hold=True)
        self.sent += 1
        return Asked(self, child, asked, verdict, stored, patience_s)

    async def answer(self, request: Asked) -> Checked:
        """The child's answer to a request sent (`send_fetch`), as `fetch` gives it."""
        child, asked, stored = request.child, request.asked, request.stored
        try:
            reply = await asyncio.wait_for(request.verdict, request.patience_s)
        except TimeoutError:
            child.stop("no answer within the time allowed")
            raise CheckerUnavailable("the checker process did not answer in time") from None
        except BaseException:
            request.forget()
            raise
        verdict, echoed, payload = reply
        if echoed != asked:  # never a verdict on one neuron's file used for another's
            child.stop(f"answered for {echoed} when asked about {asked}")
            raise CheckerUnavailable("the checker process answered for another file")
        if verdict == "refused":
            raise CodecError(str(payload))
        if verdict == "absent":
            raise NotFound(str(payload))
        if verdict == "unavailable":
            raise SourceUnavailable(str(payload))
        if verdict != "ok":
            raise CheckerUnavailable(f"the checker process failed: {payload}")
        repaired, text, rows, _, exact = payload
        self.answered += 1
        return Checked(repaired, text, rows, stored, exact)

    def close(self) -> None:
        """Stop the processes (pending checks raise `CheckerUnavailable`)."""
        with self._lock:
            self._closed = True
            _stop_all(self._children)


@dataclass(frozen=True)
class Asked:
    """A request sent to a child: the file asked, the futures of its verdict and of its
    compressed text (`Checked.stored`), how long its verdict may take."""

    checker: Checker
    child: _Child
    asked: tuple[Any, ...]
    verdict: asyncio.Future[Any]
    stored: asyncio.Future[bytes | None] | None
    patience_s: float

    async def answer(self) -> Checked:
        """The child's answer (`Checker.answer`)."""
        return await self.checker.answer(self)

    def forget(self, *_done: object) -> None:
        """Given up before its answer was used: nothing of it is wanted any more (also a
        done callback of the task that was to use it: a no-op once the verdict came, whose
        text is then for whoever took the verdict)."""
        if self.verdict.done() and not self.verdict.cancelled():
            return
        self.child.forget(self.verdict, self.stored)


SIBLINGS_S = 0.2
"""Children started within this time of each other are taken to be ready at about the same
time (`_soon_ready`)."""


def _soon_ready(child: _Child, children: list[_Child]) -> bool:
    """Whether `child` is ready, or started with one that is (both were started together:
    its share of the files waits in its pipe a moment, and is then judged alongside, instead
    of the ready one judging all of them one after another; the first neuron's forty files
    went to one child ~40% of the time at load 3)."""
    return child.ready or any(
        other.ready and abs(other.started - child.started) < SIBLINGS_S for other in children
    )


def _stop_all(children: list[_Child]) -> None:
    for child in list(children):
        child.stop("closed")
    children.clear()


class _Child:
    """One checker process with a writer and a reader thread (frames in order, pipelined)."""

    def __init__(self, command: list[str], start_timeout_s: float) -> None:
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.pid = self._process.pid
        self.started = time.monotonic()
        self.alive = True
        self.ready = False
        """Whether the child has said it is ready (its imports done). Requests sent before
        wait in its pipe; one not ready within `start_timeout_s` is ended."""
        self._start_deadline = threading.Timer(start_timeout_s, self._not_started)
        self._start_deadline.daemon = True
        self._start_deadline.start()
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        """Requests waiting for their verdict, by number."""
        self._blobs: dict[int, _Blob] = {}
        """Fetches whose compressed text is to come (each registered when its verdict is
        asked; a reply other than "ok" resolves it with None)."""
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        """What the writer thread is to write (what could not be written at once)."""
        self._held: list[tuple[bytes, bytes]] = []
        assert self._process.stdin is not None
        self._stdin = self._process.stdin.fileno()
        try:
            os.set_blocking(self._stdin, False)
        except (AttributeError, OSError):  # not for pipes here (Windows): the writer writes
            self._direct = False
        else:
            self._direct = True
        self._write_lock = threading.Lock()
        self._behind = False
        """Whether the writer thread has something to write: then requests queue behind it
        (their order kept); else they are written at once by the caller."""
        self._stdin_closed = False
        """Set (under `_write_lock`) as the pipe is closed: its descriptor's number may be
        another file's after that, and is never written to again."""
        threading.Thread(target=self._write, daemon=True, name="checker-writer").start()
        threading.Thread(target=self._read, daemon=True, name="checker-reader").start()

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        request: tuple[Any, ...],
        asked: tuple[Any, ...],
        *,
        hold: bool = False,
    ) -> tuple[asyncio.Future[Any], asyncio.Future[bytes | None] | None]:
        """Send a request: the future of its verdict and, for a fetch, of its compressed text
        (`Checked.stored`; None when it does not come). `hold`: written with the next
        `release` (the writer thread woken once for many: each wake-up took the GIL from
        the caller, ~0.1 ms a request)."""
        future: asyncio.Future[Any] = loop.create_future()
        stored: asyncio.Future[bytes | None] | None = (
            loop.create_future() if request[0] == "fetch" else None
        )
        with self._lock:
            if not self.alive:
                future.set_exception(CheckerUnavailable("the checker process ended"))
                if stored is not None:
                    stored.set_result(None)
                return future, stored
            number = next(self._ids)
            self.pending[number] = (loop, future)
            if stored is not None:
                self._blobs[number] = _Blob(loop, stored, asked)
        *meta, body = request
        head = pickle.dumps((number, *meta), protocol=pickle.HIGHEST_PROTOCOL)
        self._held.append((_FRAME.pack(len(head), len(body)) + head, body))
        if not hold:
            self.release()
        return future, stored

    def release(self) -> None:
        """Write the requests held back (`send(hold=True)`): at once if the pipe takes them
        (forty requests are ~25 KB; waking the writer thread meant waiting for the GIL
        while the window filled its panes, ~10-20 ms), the rest by the writer thread."""
        if not self._held:
            return
        held, self._held = self._held, []
        data = b"".join(part for frame in held for part in frame)
        with self._write_lock:
            if self._stdin_closed:  # the child was stopped: whoever waits was told so
                return
            if not self._behind and self._direct:
                try:
                    written = os.write(self._stdin, data)
                except OSError:  # full (BlockingIOError), or broken: the writer finds out
                    written = 0
                if written == len(data):
                    return
                data = data[written:]
                self._behind = True
            self._outbox.put(data)

    def forget(
        self, verdict: asyncio.Future[Any], stored: asyncio.Future[bytes | None] | None
    ) -> None:
        """A request given up before its verdict was used: whatever comes of it is dropped."""
        with self._lock:
            for number, (_, future) in list(self.pending.items()):
                if future is verdict:
                    del self.pending[number]
            for number, blob in list(self._blobs.items()):
                if blob.future is stored:
                    del self._blobs[number]
        if not verdict.done():
            verdict.cancel()
        if stored is not None and not stored.done():
            stored.set_result(None)

    def _write(self) -> None:
        pipe = self._process.stdin
        assert pipe is not None
        try:
            while (data := self._outbox.get()) is not None:
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(self._stdin, view) :]
                    except BlockingIOError:  # the child reads on: wait until it took some
                        select.select([], [self._stdin], [])  # (only a non-blocking pipe)
                with self._write_lock:
                    if self._outbox.empty():
                        self._behind = False
        except (OSError, ValueError) as exc:
            self.stop(f"could not write to it: {exc}")
        finally:
            with self._write_lock, contextlib.suppress(OSError, ValueError):
                self._stdin_closed = True
                pipe.close()

    def _read(self) -> None:
        pipe = self._process.stdout
        assert pipe is not None
        why = "it ended"
        try:
            while (frame := _read_frame(pipe)) is not None:
                number, *reply = pickle.loads(frame)
                if number == _READY:
                    self.ready = True
                    self._start_deadline.cancel()
                    continue
                if reply[0] == "stored":
                    self._stored(number, reply)
                    continue
                with self._lock:
                    waiting = self.pending.pop(number, None)
                    blob = self._blobs.pop(number, None) if reply[0] != "ok" else None
                if blob is not None:  # refused, absent...: no text will come
                    blob.give(None)
                if waiting is not None:
                    loop, future = waiting
                    with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
                        loop.call_soon_threadsafe(_resolve, future, tuple(reply))
        except Exception as exc:  # a broken pipe or frame: the child is not to be trusted
            why = f"unreadable answer: {exc}"
        self.stop(why)

    def _stored(self, number: int, reply: list[Any]) -> None:
        """A fetch's compressed text, after its verdict: to whoever waits for it, if it is of
        the file asked (else the child is not to be trusted, and nothing is stored)."""
        _, echoed, body = reply
        with self._lock:
            blob = self._blobs.pop(number, None)
        if blob is None:
            return
        if echoed != blob.asked or not isinstance(body, bytes):
            blob.give(None)
            self.stop(f"sent the text of {echoed} for {blob.asked}")
            return
        blob.give(body)

    def _not_started(self) -> None:
        if not self.ready:
            self.stop("not ready in time")

    def stop(self, why: str) -> None:
        """End the child; whoever still waits is told to check elsewhere."""
        self._start_deadline.cancel()
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            waiting, self.pending = self.pending, {}
            blobs, self._blobs = self._blobs, {}
        if why != "closed":
            logger.warning("checker process stopped: %s", why)
        self._outbox.put(None)
        for loop, future in waiting.values():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_fail, future, CheckerUnavailable(why))
        for blob in blobs.values():  # accepted, but its text never came: not stored
            blob.give(None)
        patient = why == "closed" and self.ready  # one still starting has nothing to finish
        threading.Thread(target=self._reap, args=(patient,), daemon=True).start()

    def _reap(self, patient: bool) -> None:
        """Patient: the child ends by itself once its input ends (a moment to finish); else
        it is ended now."""
        try:
            self._process.wait(2 if patient else 0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@dataclass(frozen=True)
class _Blob:
    """A fetch's compressed text to come: the caller's loop and future, the file asked."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[bytes | None]
    asked: tuple[Any, ...]

    def give(self, body: bytes | None) -> None:
        """Resolve the future on its loop (from any thread)."""
        with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
            self.loop.call_soon_threadsafe(_resolve, self.future, body)


def _resolve(future: asyncio.Future[Any], reply: Any) -> None:
    if not future.done():
        future.set_result(reply)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _read_frame(pipe: IO[bytes]) -> bytes | None:
    header = pipe.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    frame = pipe.read(size)
    if len(frame) < size:
        return None
    return frame


def _verdict(
    number: int, kind: Kind, dataset: Dataset, ref: NeuronRef, source: str, body: bytes,
    *, to_store: bool,
) -> tuple[Any, ...]:
    """The child's verdict on one body: (number, verdict, echoed file, payload); `to_store`:
    the payload holds the accepted text (compressed later, `_Server`), whether repaired or
    not."""
    echoed = (ref.dataset, ref.layer, ref.index, kind.value)
    with _no_collection():  # until the parsed file is freed
        return number, *_judged(kind, dataset, ref, source, body, echoed, to_store)


def _judged(
    kind: Kind, dataset: Dataset, ref: NeuronRef, source: str, body: bytes,
    echoed: tuple[Any, ...], to_store: bool,
) -> tuple[Any, ...]:
    from neuron_desk.data.validation import accept

    try:
        checked = accept(kind, body, dataset=dataset, ref=ref, source=source)
    except NeuronDeskError as exc:  # a refusal (CodecError), with its message
        return "refused", echoed, str(exc)
    except Exception as exc:  # a bug here: the caller checks in its own process
        return "failed", echoed, f"{type(exc).__name__}: {exc}"
    rows = summary_rows(kind, checked.value)
    text = checked.text if checked.repaired or to_store else None
    return "ok", echoed, (checked.repaired, text, rows, None, checked.checked)


class _Server:
    """The child: answers requests on an asyncio loop (fetches run concurrently), replies in
    whatever order they are done. A fetch's verdict goes at once; the accepted text is
    compressed and sent once no other fetch is still to be judged (or `BLOB_WAIT_S` after
    its verdict), so forty verdicts are not held behind forty compressions."""

    def __init__(self, replies: IO[bytes]) -> None:
        self._judging = 0
        """Fetches taken whose verdict is not sent yet."""
        self._to_compress: collections.deque[tuple[float, int, tuple[Any, ...], str]] = (
            collections.deque()
        )
        """Accepted texts to compress and send: (when accepted, number, echoed file, text)."""
        self._compressing: asyncio.TimerHandle | asyncio.Handle | None = None
        """The next `_compress_one`: at once (a Handle) or when the oldest text is due."""
        self._sources: dict[tuple[str, str], Any] = {}
        self._clients: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=_write_frames, args=(replies, self._outbox), daemon=True, name="replies"
        )
        self._writer.start()

    def reply(self, answer: tuple[Any, ...]) -> None:
        """Send a reply (by the writer thread: the loop goes on while the caller reads)."""
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox.put(_HEADER.pack(len(payload)) + payload)

    def take(self, request: tuple[Any, ...]) -> None:
        number, operation, kind, dataset, ref, detail, body = request
        if operation == "check":
            self.reply(_verdict(number, kind, dataset, ref, detail, body, to_store=False))
            return
        self._judging += 1
        task = asyncio.ensure_future(self._fetch(number, kind, dataset, ref, *detail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(
        self, number: int, kind: Kind, dataset: Dataset, ref: NeuronRef,
        base_url: str, relative: str, http: dict[str, float],
    ) -> None:
        try:
            answer = await self._fetched_verdict(
                number, kind, dataset, ref, base_url, relative, http
            )
        finally:
            self._judging -= 1
        if answer[1] != "ok":
            self.reply(answer)
            return
        number, verdict, echoed, (repaired, text, rows, _, exact) = answer
        self.reply((number, verdict, echoed, (repaired, None, rows, None, exact)))
        self._to_compress.append((time.monotonic(), number, echoed, text))
        self._compress_soon()

    def _compress_soon(self) -> None:
        """Compress and send the waiting texts, one per turn of the loop, while no fetch is
        to be judged; the oldest regardless once it waited `BLOB_WAIT_S`."""
        if not self._to_compress:
            return
        if isinstance(self._compressing, asyncio.TimerHandle) and not self._judging:
            self._compressing.cancel()  # the last verdict went: no need to wait any longer
            self._compressing = None
        if self._compressing is not None:
            return
        loop = asyncio.get_running_loop()
        if self._judging:
            due = self._to_compress[0][0] + BLOB_WAIT_S - time.monotonic()
            self._compressing = loop.call_later(max(due, 0.0), self._compress_one)
        else:
            self._compressing = loop.call_soon(self._compress_one)

    def _compress_one(self) -> None:
        from neuron_desk.data.store import compress

        self._compressing = None
        if not self._to_compress:
            return
        accepted_at, number, echoed, text = self._to_compress[0]
        if self._judging and time.monotonic() < accepted_at + BLOB_WAIT_S:
            self._compress_soon()  # a fetch came in meanwhile: its verdict first
            return
        self._to_compress.popleft()
        self.reply((number, "stored", echoed, compress(text)))
        self._compress_soon()

    async def _fetched_verdict(
        self, number: int, kind: Kind, dataset: Dataset, ref: NeuronRef,
        base_url: str, relative: str, http: dict[str, float],
    ) -> tuple[Any, ...]:
        echoed = (ref.dataset, ref.layer, ref.index, kind.value)
        try:
            body = await self._source(base_url, http).fetch(relative)
        except NotFound as exc:
            return number, "absent", echoed, str(exc)
        except SourceUnavailable as exc:
            return number, "unavailable", echoed, str(exc)
        except Exception as exc:  # the caller fetches in its own process
            return number, "failed", echoed, f"{type(exc).__name__}: {exc}"
        source = f"network file {relative}"
        return _verdict(number, kind, dataset, ref, source, body, to_store=True)

    def _source(self, base_url: str, http: dict[str, float]) -> Any:
        """The host's source: `HttpSource` (its retries, caps and time limits) over one httpx
        client whose transport is `core.wire.LeanTransport` (HTTP/1.1 straight from an asyncio
        protocol: a 420 KB body costs ~0.3 ms of CPU instead of httpcore's 1-5 ms)."""
        import httpx

        from neuron_desk.core.wire import LeanTransport
        from neuron_desk.data.sources import HTTP_CONNECTIONS, HttpSource

        key = (base_url, repr(sorted(http.items())))
        source = self._sources.get(key)
        if source is None:
            timeout = http.get("timeout_s", 30.0)
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                follow_redirects=True,
                transport=LeanTransport(HTTP_CONNECTIONS),
            )
            self._clients.append(client)
            source = self._sources[key] = HttpSource(
                base_url,
                client,
                retries=int(http.get("retries", 3)),
                backoff_s=http.get("backoff_s", 0.5),
                file_time_s=http.get("file_time_s", 120.0),
            )
        return source

    async def run(self, requests: IO[bytes]) -> None:
        self.reply((_READY,))
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()

        def read() -> None:
            try:
                while (request := _read_request(requests)) is not None:
                    loop.call_soon_threadsafe(self.take, request)
            finally:
                loop.call_soon_threadsafe(ended.set)

        threading.Thread(target=read, daemon=True, name="checker-requests").start()
        await ended.wait()
        for task in list(self._tasks):
            task.cancel()
        while self._to_compress:  # what was accepted is still sent (the caller may wait)
            self._judging = 0
            self._compress_one()
        for client in self._clients:
            await client.aclose()
        self._outbox.put(None)
        self._writer.join(5)


def _write_frames(pipe: IO[bytes], frames: queue.SimpleQueue[bytes | None]) -> None:
    """Write queued frames to `pipe` until None (or the pipe breaks: the caller is gone)."""
    with contextlib.suppress(OSError, ValueError):
        while (frame := frames.get()) is not None:
            pipe.write(frame)
            pipe.flush()


def _read_request(pipe: IO[bytes]) -> tuple[Any, ...] | None:
    header = pipe.read(_FRAME.size)
    if len(header) < _FRAME.size:
        return None
    head_size, body_size = _FRAME.unpack(header)
    head = pipe.read(head_size)
    body = pipe.read(body_size)
    if len(head) < head_size or len(body) < body_size:
        return None
    return (*pickle.loads(head), body)


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Answer requests from `requests` until it ends."""
    asyncio.run(_Server(replies).run(requests))


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No cyclic garbage collection while a body is parsed, built and summarized: its ~3 000
    lists and dicts (freed by their reference counts once the verdict is made: no cycles)
    would set off several collections per file, each scanning what is alive (~1-2 ms of a
    5 ms check, measured in the checker process)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot break a frame
    sys.stdout = sys.stderr
    # httpx's command line (rich, click, pygments: ~85 ms of the child's ~250 ms start when
    # they are installed) is imported with httpx unless it cannot be; the child never uses it
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx  # noqa: F401  (ready before the first request)

    import neuron_desk.core.wire
    import neuron_desk.data.sources
    import neuron_desk.data.store
    import neuron_desk.data.validation  # noqa: F401

    gc.freeze()  # what the imports made is never garbage: later collections skip it

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    _main()
