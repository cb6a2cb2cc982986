"""Checking fetched files in a process of their own: `accept` in another interpreter.

Parsing and checking a 420 KB explanations file holds the GIL for ~2 ms; forty of them
arriving at once (a neuron's related neurons, in the app) would hold the window's thread for
~100 ms and more, since threads of one process do not parse at the same time. `Checker` hands
each body to a child process (`python -m neuron_desk.data.checker`, started when first needed,
never forked from the app) that runs the very same `accept` and sends back the verdict and
what the caller needs of the file (for an explanations file: its explanations and scores),
not the parsed model.

The rules stay those of the border: the caller stores only a body the child accepted (the
body as sent, or the repaired text the child returns), under the neuron it asked about (the
child echoes it back and a reply that does not match is not used); a refusal comes back as
the same `CodecError` message. Whatever goes wrong with the child itself (it cannot start, it
died, it hangs) raises `CheckerUnavailable`, and the caller checks in its own process instead:
nothing is lost and nothing unchecked gets through.

Frames on the pipes (pickles are trusted: our own child): a request is two 4-byte big-endian
lengths, its pickled fields, then the body's bytes; a reply is a length and a pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from dataclasses import dataclass
from typing import IO, Any

from neuron_desk.core.errors import CodecError, NeuronDeskError
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.registry import Dataset, Kind

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_FRAME = struct.Struct(">II")
"""A request's header: the length of its pickled fields, then of the body that follows."""
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
    """The text to store when something was repaired; None: the body as sent."""
    rows: Rows | None
    """An explanations file's explanations and their preferred scores, in order."""


def summary_rows(kind: Kind, value: Any) -> Rows | None:
    """What a caller needs of an accepted file besides the verdict (explanations: each one's
    text and preferred score, in the file's order)."""
    if kind is not Kind.EXPLANATIONS:
        return None
    return [(e.explanation, e.get_preferred_score()) for e in value.scored_explanations]


class Checker:
    """A pool of checker processes, started on the first `start()` or `check()`."""

    def __init__(self, processes: int = 1) -> None:
        self._wanted = max(1, processes)
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.failed_to_start = ""
        """Why the processes could not be started ("" if they were, or were not tried)."""
        weakref.finalize(self, _stop_all, self._children)  # a checker forgotten unclosed

    @staticmethod
    def possible() -> bool:
        """Whether a child interpreter can be started (not in a frozen app)."""
        return not getattr(sys, "frozen", False) and bool(sys.executable)

    def start(self) -> bool:
        """Start the processes now (in the background: they import while the caller goes on);
        False if they cannot run here."""
        with self._lock:
            if self._closed or self.failed_to_start or not self.possible():
                return False
            self._children[:] = [c for c in self._children if c.alive]
            try:
                while len(self._children) < self._wanted:
                    self._children.append(_Child())
            except OSError as exc:
                self.failed_to_start = str(exc)
                logger.warning("checking files in this process: no checker process (%s)", exc)
                return bool(self._children)
            return True

    async def check(
        self, kind: Kind, body: bytes, *, dataset: Dataset, ref: NeuronRef, source: str
    ) -> Checked:
        """`accept` of `body` in a child: the `Checked` summary, or the child's `CodecError`."""
        if not self.start():
            raise CheckerUnavailable(self.failed_to_start or "no checker process here")
        with self._lock:
            children = [c for c in self._children if c.alive]
        if not children:
            raise CheckerUnavailable("the checker processes ended")
        child = min(children, key=lambda c: len(c.pending))
        asked = (ref.dataset, ref.layer, ref.index, kind.value)
        future = child.send(asyncio.get_running_loop(), (kind, dataset, ref, source, body))
        try:
            reply = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
        except TimeoutError:
            child.stop("no answer within the time allowed")
            raise CheckerUnavailable("the checker process did not answer in time") from None
        verdict, echoed, payload = reply
        if echoed != asked:  # never a verdict on one neuron's file used for another's
            child.stop(f"answered for {echoed} when asked about {asked}")
            raise CheckerUnavailable("the checker process answered for another file")
        if verdict == "refused":
            raise CodecError(str(payload))
        if verdict != "ok":
            raise CheckerUnavailable(f"the checker process failed: {payload}")
        repaired, text, rows = payload
        return Checked(repaired, text, rows)

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

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "neuron_desk.data.checker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.alive = True
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
                with self._lock:
                    waiting = self.pending.pop(number, None)
                if waiting is not None:
                    loop, future = waiting
                    with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
                        loop.call_soon_threadsafe(_resolve, future, tuple(reply))
        except Exception as exc:  # a broken pipe or frame: the child is not to be trusted
            why = f"unreadable answer: {exc}"
        self.stop(why)

    def stop(self, why: str) -> None:
        """End the child; whoever still waits is told to check elsewhere."""
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
        with contextlib.suppress(OSError):
            self._process.terminate()
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
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


def _answer(request: tuple[Any, ...]) -> tuple[Any, ...]:
    """The child's work for one request: (number, verdict, echoed file, payload)."""
    from neuron_desk.data.validation import accept

    number, kind, dataset, ref, source, body = request
    echoed = (ref.dataset, ref.layer, ref.index, kind.value)
    try:
        checked = accept(kind, body, dataset=dataset, ref=ref, source=source)
    except NeuronDeskError as exc:  # a refusal (CodecError), with its message
        return number, "refused", echoed, str(exc)
    except Exception as exc:  # a bug here: the caller checks in its own process
        return number, "failed", echoed, f"{type(exc).__name__}: {exc}"
    text = checked.text if checked.repaired else None
    return number, "ok", echoed, (checked.repaired, text, summary_rows(kind, checked.value))


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
    while (request := _read_request(requests)) is not None:
        payload = pickle.dumps(_answer(request), protocol=pickle.HIGHEST_PROTOCOL)
        replies.write(_HEADER.pack(len(payload)) + payload)
        replies.flush()


def _main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot break a frame
    sys.stdout = sys.stderr
    import neuron_desk.data.validation  # noqa: F401  (ready before the first request)

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    _main()
