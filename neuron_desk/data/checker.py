"""Fetching and checking files in a process of their own: `accept` in another interpreter.

Receiving a 420 KB explanations file through httpx and parsing and checking it hold the GIL
for several milliseconds; forty of them arriving at once (a neuron's related neurons, in the
app) would hold the window's thread for hundreds, since threads of one process do not run
Python at the same time. `Checker` hands such files to child processes (`python -m
neuron_desk.data.checker`, all started together when first needed, never forked from the
app): `fetch` has the child GET the file (an `HttpSource` of its own, with the caller's
timeouts, retries and caps, over `wire.LeanTransport`) and run the very same `accept`;
`check` sends a body the caller already has. The child sends back the verdict and what the
caller needs of the file (for an explanations file: its explanations and scores, and the
accepted text compressed as the store keeps it, ~140 KB instead of 420 KB), not the parsed
model.

The rules stay those of the border: the caller stores only a text the child accepted, under
the neuron it asked about (the child echoes it back and a reply that does not match is not
used); a refusal comes back as the same `CodecError` message, a missing file as `NotFound`,
an unreachable one as `SourceUnavailable`. Whatever goes wrong with the child itself (it
cannot start, it died, it hangs) raises `CheckerUnavailable`, and the caller fetches and
checks in its own process instead: nothing is lost and nothing unchecked gets through.

Frames on the pipes (pickles are trusted: our own child): a request is two 4-byte big-endian
lengths, its pickled fields, then the body's bytes; a reply is a length and a pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
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
    stored: bytes | None = None
    """`fetch`: the accepted text as the store keeps it (`store.compress`d in the child, so
    the caller neither receives 420 KB of text nor compresses it: `Store.put_compressed`)."""
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

    def ready(self) -> bool:
        """Whether a child is ready (False while they start: requests sent meanwhile wait in
        a starting child's pipe, at most its `start_timeout_s`)."""
        with self._lock:
            return any(c.alive and c.ready for c in self._children)

    async def check(
        self, kind: Kind, body: bytes, *, dataset: Dataset, ref: NeuronRef, source: str
    ) -> Checked:
        """`accept` of `body` in a child: the `Checked` summary, or the child's `CodecError`."""
        return await self._ask("check", kind, dataset, ref, source, body, REPLY_TIMEOUT_S)

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
        options) and `accept` it there: the `Checked` summary with the accepted text; or the
        source's NotFound or SourceUnavailable, or the child's `CodecError`."""
        patience = http.get("file_time_s", 120.0) + REPLY_TIMEOUT_S
        return await self._ask(
            "fetch", kind, dataset, ref, (base_url, relative, http), b"", patience
        )

    async def _ask(
        self,
        operation: str,
        kind: Kind,
        dataset: Dataset,
        ref: NeuronRef,
        detail: Any,
        body: bytes,
        patience_s: float,
    ) -> Checked:
        if not self.start():
            raise CheckerUnavailable(self.failed_to_start or "no checker process here")
        with self._lock:
            children = [c for c in self._children if c.alive]
        if not children:
            raise CheckerUnavailable("the checker processes ended")
        child = min(children, key=lambda c: (not c.ready, len(c.pending)))
        asked = (ref.dataset, ref.layer, ref.index, kind.value)
        request = (operation, kind, dataset, ref, detail, body)
        future = child.send(asyncio.get_running_loop(), request)
        try:
            reply = await asyncio.wait_for(future, patience_s)
        except TimeoutError:
            child.stop("no answer within the time allowed")
            raise CheckerUnavailable("the checker process did not answer in time") from None
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
        repaired, text, rows, stored, exact = payload
        self.answered += 1
        return Checked(repaired, text, rows, stored, exact)

    def close(self) -> None:
        """Stop the processes (pending checks raise `CheckerUnavailable`)."""
        with self._lock:
            self._closed = True
            _stop_all(self._children)


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
        self.alive = True
        self.ready = False
        """Whether the child has said it is ready (its imports done). Requests sent before
        wait in its pipe; one not ready within `start_timeout_s` is ended."""
        self._start_deadline = threading.Timer(start_timeout_s, self._not_started)
        self._start_deadline.daemon = True
        self._start_deadline.start()
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._outbox: queue.SimpleQueue[tuple[bytes, bytes] | None] = queue.SimpleQueue()
        threading.Thread(target=self._write, daemon=True, name="checker-writer").start()
        threading.Thread(target=self._read, daemon=True, name="checker-reader").start()

    def send(
        self, loop: asyncio.AbstractEventLoop, request: tuple[Any, ...]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if not self.alive:
                future.set_exception(CheckerUnavailable("the checker process ended"))
                return future
            number = next(self._ids)
            self.pending[number] = (loop, future)
        *meta, body = request
        head = pickle.dumps((number, *meta), protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox.put((_FRAME.pack(len(head), len(body)) + head, body))
        return future

    def _write(self) -> None:
        pipe = self._process.stdin
        assert pipe is not None
        try:
            while (frame := self._outbox.get()) is not None:
                pipe.write(frame[0])
                pipe.write(frame[1])  # the body as it is: no copy into one frame
                pipe.flush()
        except (OSError, ValueError) as exc:
            self.stop(f"could not write to it: {exc}")
        finally:
            with contextlib.suppress(OSError, ValueError):
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
                with self._lock:
                    waiting = self.pending.pop(number, None)
                if waiting is not None:
                    loop, future = waiting
                    with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
                        loop.call_soon_threadsafe(_resolve, future, tuple(reply))
        except Exception as exc:  # a broken pipe or frame: the child is not to be trusted
            why = f"unreadable answer: {exc}"
        self.stop(why)

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
        if why != "closed":
            logger.warning("checker process stopped: %s", why)
        self._outbox.put(None)
        for loop, future in waiting.values():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_fail, future, CheckerUnavailable(why))
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


def _resolve(future: asyncio.Future[Any], reply: tuple[Any, ...]) -> None:
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
    the payload holds the accepted text compressed for the store."""
    echoed = (ref.dataset, ref.layer, ref.index, kind.value)
    with _no_collection():  # until the parsed file is freed
        return number, *_judged(kind, dataset, ref, source, body, echoed, to_store)


def _judged(
    kind: Kind, dataset: Dataset, ref: NeuronRef, source: str, body: bytes,
    echoed: tuple[Any, ...], to_store: bool,
) -> tuple[Any, ...]:
    from neuron_desk.data.store import compress
    from neuron_desk.data.validation import accept

    try:
        checked = accept(kind, body, dataset=dataset, ref=ref, source=source)
    except NeuronDeskError as exc:  # a refusal (CodecError), with its message
        return "refused", echoed, str(exc)
    except Exception as exc:  # a bug here: the caller checks in its own process
        return "failed", echoed, f"{type(exc).__name__}: {exc}"
    rows = summary_rows(kind, checked.value)
    if to_store:
        stored = compress(checked.text)
        return "ok", echoed, (checked.repaired, None, rows, stored, checked.checked)
    text = checked.text if checked.repaired else None
    return "ok", echoed, (checked.repaired, text, rows, None, checked.checked)


class _Server:
    """The child: answers requests on an asyncio loop (fetches run concurrently), replies in
    whatever order they are done."""

    def __init__(self, replies: IO[bytes]) -> None:
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
        task = asyncio.ensure_future(self._fetch(number, kind, dataset, ref, *detail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(
        self, number: int, kind: Kind, dataset: Dataset, ref: NeuronRef,
        base_url: str, relative: str, http: dict[str, float],
    ) -> None:
        echoed = (ref.dataset, ref.layer, ref.index, kind.value)
        try:
            body = await self._source(base_url, http).fetch(relative)
        except NotFound as exc:
            self.reply((number, "absent", echoed, str(exc)))
            return
        except SourceUnavailable as exc:
            self.reply((number, "unavailable", echoed, str(exc)))
            return
        except Exception as exc:  # the caller fetches in its own process
            self.reply((number, "failed", echoed, f"{type(exc).__name__}: {exc}"))
            return
        source = f"network file {relative}"
        self.reply(_verdict(number, kind, dataset, ref, source, body, to_store=True))

    def _source(self, base_url: str, http: dict[str, float]) -> Any:
        """The host's source: `HttpSource` (its retries, caps and time limits) over one httpx
        client whose transport is `wire.LeanTransport` (HTTP/1.1 straight from an asyncio
        protocol: a 420 KB body costs ~0.3 ms of CPU instead of httpcore's 1-5 ms)."""
        import httpx

        from neuron_desk.data.sources import HTTP_CONNECTIONS, HttpSource
        from neuron_desk.data.wire import LeanTransport

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

    import neuron_desk.data.sources
    import neuron_desk.data.store
    import neuron_desk.data.validation
    import neuron_desk.data.wire  # noqa: F401

    gc.freeze()  # what the imports made is never garbage: later collections skip it

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    _main()
