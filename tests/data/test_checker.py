"""The checker processes (data/checker.py): a neighbour's published explanation is fetched
and checked in another process, and the service stores only what that process accepted,
under the neuron it was asked about. Real child processes, the mirror over real sockets, a
real SQLite store; a child that dies, or answers for another file, loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from neuron_desk.core import codec
from neuron_desk.core.errors import CodecError, NotFound
from neuron_desk.core.model import (
    NeuronId,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSimulation,
)
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.checker import Checker, CheckerUnavailable
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind, Registry
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.data.validation import RULES_VERSION, accept
from tests.data.mirror import Mirror
from tests.socket_server import ConnectionServer

HTTP = {"timeout_s": 5.0, "retries": 1, "backoff_s": 0.01, "file_time_s": 10.0}


def ref(layer: int, index: int) -> NeuronRef:
    return NeuronRef("mirror", layer, index)


def explanations_path(layout: Path, layer: int, index: int) -> Path:
    return layout / Kind.EXPLANATIONS.relative_path(layer, index)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


def with_service(
    registry: Registry, store: Store, work: Callable[[NeuronService], Awaitable[Any]],
    *, warm: bool = True,
) -> Any:
    """Run `work` with a service whose checker process is ready (`warm`) or starting."""

    async def go() -> Any:
        s = NeuronService(registry, store, timeout_s=5.0, http_backoff_s=0.01, checker_processes=1)
        try:
            if warm:
                assert s.checker is not None and s.checker.start()
                await until(s.checker.ready)
            return await work(s)
        finally:
            await s.aclose()

    return asyncio.run(go())


def test_a_fetched_explanation_is_checked_in_the_checker_and_stored_as_served(
    registry: Registry, store: Store, mirror: Mirror, layout: Path
) -> None:
    async def work(s: NeuronService) -> tuple[Any, Any, int]:
        first = await s.first_published(ref(0, 1))
        again = await s.first_published(ref(0, 1))  # from the store now
        assert s.checker is not None
        return first, again, s.checker.answered

    first, again, answered = with_service(registry, store, work)
    assert first == again == (" words with the letter e (0:1)", 0.42)
    assert answered == 1  # checked in the child, not here
    stored = store.get_file(ref(0, 1), "explanations")
    assert stored is not None and stored.origin == "network"
    assert stored.text == explanations_path(layout, 0, 1).read_text()
    body = store.get_files(ref(0, 1), ["explanations"])["explanations"]
    assert body.checked == RULES_VERSION  # accepted as exact there: read back without a second check
    rows = Explanations(store).of(ref(0, 1))
    assert [(r.explanation, r.score, r.source) for r in rows] == [
        (" words with the letter e (0:1)", 0.42, "published")
    ]
    assert mirror.faults.requests.count("explanations/0/1.jsonl") == 1


def test_a_malformed_file_is_refused_naming_it_and_nothing_is_stored(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    mirror.faults.truncate.add("explanations/0/2.jsonl")

    async def work(s: NeuronService) -> None:
        with pytest.raises(CodecError, match=r"network file explanations/0/2\.jsonl"):
            await s.first_published(ref(0, 2))

    with_service(registry, store, work)
    assert store.get_file(ref(0, 2), "explanations") is None
    assert Explanations(store).of(ref(0, 2)) == []


def test_a_file_naming_another_neuron_is_stored_under_neither(
    registry: Registry, store: Store, mirror: Mirror, layout: Path
) -> None:
    other = NeuronSimulationResults(
        NeuronId(0, 4), [ScoredExplanation("a file for 0:4", ScoredSimulation([], 0.9))]
    )
    explanations_path(layout, 0, 3).write_text(codec.dumps(other) + "\n")

    async def work(s: NeuronService) -> None:
        with pytest.raises(CodecError, match="not 0:3"):
            await s.first_published(ref(0, 3))

    with_service(registry, store, work)
    assert store.get_file(ref(0, 3), "explanations") is None
    assert store.get_file(ref(0, 4), "explanations") is None
    assert Explanations(store).of(ref(0, 3)) == Explanations(store).of(ref(0, 4)) == []


def test_a_missing_file_is_not_found_and_remembered_as_absent(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> None:
        for _ in range(2):
            with pytest.raises(NotFound, match="1:5"):
                await s.first_published(ref(1, 5))

    with_service(registry, store, work)
    assert store.is_absent(ref(1, 5), "explanations")
    assert mirror.faults.requests.count("explanations/1/5.jsonl") == 1


def test_a_file_asked_while_the_checker_starts_is_checked_by_it_once_ready(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> tuple[Any, int, bool]:
        assert s.checker is not None
        s.checker.start()
        starting = not s.checker.ready()
        best = await s.first_published(ref(0, 5))  # waits in the child's pipe meanwhile
        return best, s.checker.answered, starting

    best, answered, starting = with_service(registry, store, work, warm=False)
    assert starting
    assert best == (" words with the letter e (0:5)", 0.42)
    assert answered == 1
    assert store.get_file(ref(0, 5), "explanations") is not None


SLOW_CHILD = [sys.executable, "-c", "import time; time.sleep(30)"]
"""A child that never says it is ready."""


def test_a_checker_not_ready_in_time_is_ended_and_the_file_checked_here(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> tuple[Any, Checker, list[int]]:
        s._checker = Checker(1, SLOW_CHILD, start_timeout_s=0.3)
        s._checker.start()
        pids = s._checker.process_ids()
        best = await s.first_published(ref(0, 5))
        return best, s._checker, pids

    started = time.monotonic()
    best, checker, pids = with_service(registry, store, work, warm=False)
    assert time.monotonic() - started < 10
    assert best == (" words with the letter e (0:5)", 0.42)
    assert checker.answered == 0  # checked here
    assert store.get_file(ref(0, 5), "explanations") is not None
    assert len(pids) == 1
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pids[0]}").exists() and "Z" not in _state(pids[0]):
        assert time.monotonic() < deadline, "the slow child still runs"
        time.sleep(0.05)


def test_a_checker_that_died_loses_nothing(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    mirror.faults.delay_s["explanations/1/0.jsonl"] = 0.5  # in flight when the child dies

    async def work(s: NeuronService) -> tuple[Any, Any]:
        assert s.checker is not None
        assert s.checker.answered == 0
        asked = asyncio.ensure_future(s.first_published(ref(1, 0)))
        await until(lambda: "explanations/1/0.jsonl" in mirror.faults.requests)
        for pid in s.checker.process_ids():
            os.kill(pid, 9)
        first = await asked  # checked here once the child was gone
        assert s.checker.answered == 0
        second = await s.first_published(ref(1, 1))  # by a new child
        assert s.checker.answered == 1
        return first, second

    first, second = with_service(registry, store, work)
    assert first == (" words with the letter e (1:0)", 0.42)
    assert second == (" words with the letter e (1:1)", 0.42)
    assert store.get_file(ref(1, 0), "explanations") is not None
    assert store.get_file(ref(1, 1), "explanations") is not None
    assert mirror.faults.requests.count("explanations/1/0.jsonl") == 2  # by the child, then here


LYING_CHILD = """
import sys
import neuron_desk.data.checker as checker
honest = checker._verdict
def lying(number, kind, dataset, ref, source, body, *, to_store):
    answer = honest(number, kind, dataset, ref, source, body, to_store=to_store)
    return (answer[0], answer[1], (ref.dataset, ref.layer, ref.index + 1, kind.value), answer[3])
checker._verdict = lying
checker._main()
"""


def test_an_answer_for_another_file_is_not_used(
    registry: Registry, mirror: Mirror, tmp_path: Path
) -> None:
    script = tmp_path / "lying_child.py"
    script.write_text(LYING_CHILD)
    dataset = registry.get("mirror")

    async def go() -> None:
        checker = Checker(1, [sys.executable, str(script)])
        try:
            checker.start()
            await until(checker.ready)
            with pytest.raises(CheckerUnavailable, match="another file"):
                await checker.fetch(
                    Kind.EXPLANATIONS, mirror.base_url, "explanations/0/1.jsonl",
                    dataset=dataset, ref=ref(0, 1), http=HTTP,
                )
            await until(lambda: not checker.process_ids())  # that child is not used again
        finally:
            checker.close()

    asyncio.run(go())


def test_a_body_sent_to_the_checker_gets_the_borders_verdict(
    registry: Registry, layout: Path
) -> None:
    dataset = registry.get("mirror")
    good = explanations_path(layout, 0, 1).read_bytes()
    bad = good.replace(b'"explanation"', b'"explanations"', 1)
    with pytest.raises(CodecError) as here:
        accept(Kind.EXPLANATIONS, bad, dataset=dataset, ref=ref(0, 1), source="the file")

    async def go() -> tuple[Any, str]:
        checker = Checker(1)
        try:
            checked = await checker.check(
                Kind.EXPLANATIONS, good, dataset=dataset, ref=ref(0, 1), source="the file"
            )
            with pytest.raises(CodecError) as there:
                await checker.check(
                    Kind.EXPLANATIONS, bad, dataset=dataset, ref=ref(0, 1), source="the file"
                )
            return checked, str(there.value)
        finally:
            checker.close()

    checked, refusal = asyncio.run(go())
    assert checked.rows == [(" words with the letter e (0:1)", 0.42)]
    assert checked.text is None and checked.repaired == ""  # the body as sent is stored
    assert refusal == str(here.value)


def test_closing_the_service_ends_its_checker_processes(registry: Registry, store: Store) -> None:
    async def work(s: NeuronService) -> list[int]:
        assert s.checker is not None
        return s.checker.process_ids()

    pids = with_service(registry, store, work)
    assert len(pids) == 1
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pids[0]}").exists() and "Z" not in _state(pids[0]):
        assert time.monotonic() < deadline, "the checker process still runs"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_opening_a_network_neuron_starts_the_checker_and_a_prefetch_does_not(
    registry: Registry, store: Store, mirror: Mirror, tmp_path: Path
) -> None:
    from neuron_desk.core.paths import Paths
    from neuron_desk.desk import Desk

    async def go() -> tuple[list[int], list[int], list[int]]:
        fetching = NeuronService(registry, store, timeout_s=5.0, checker_processes=1)
        offline = NeuronService(registry, store, offline=True, checker_processes=1)
        browsing = NeuronService(registry, store, timeout_s=5.0, checker_processes=1)
        try:
            await fetching.prefetch("mirror", [ref(0, 1)])
            offline.expect_summaries("mirror")  # offline: nothing to fetch
            desk = Desk(store, registry, browsing, paths=Paths.at(tmp_path))
            await desk.neuron(ref(0, 2))
            assert fetching.checker and offline.checker and browsing.checker
            return (
                fetching.checker.process_ids(),
                offline.checker.process_ids(),
                browsing.checker.process_ids(),
            )
        finally:
            for s in (fetching, offline, browsing):
                await s.aclose()

    prefetched, offline, browsed = asyncio.run(go())
    assert prefetched == [] and offline == []
    assert len(browsed) == 1  # started while the neuron loaded, before any summary is asked


# --- the checker processes' HTTP transport (core/wire.py) against httpx's own ---


class RawServer(ConnectionServer):
    """A socket server on 127.0.0.1 answering each path with scripted raw bytes: per path a
    function of how often it was asked, giving (bytes to send, then close the connection?,
    seconds to wait first). Connections are kept open between requests unless closed."""

    def __init__(self, script: dict[str, Callable[[int], tuple[bytes, bool, float]]]) -> None:
        self.script = script
        self.asked: dict[str, int] = {}
        self._open: list[Any] = []
        super().__init__(backlog=128)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, conn: Any) -> None:
        self._open.append(conn)
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                count = self.asked[path] = self.asked.get(path, 0) + 1
                raw, close, delay = self.script[path](count)
                time.sleep(delay)
                conn.sendall(raw)
                if close:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()


def answer(status: str, body: bytes, *headers: str, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 70_000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    out = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in pieces)
    return out + b"0\r\nTrailer: x\r\n\r\n"


BIG = bytes(range(256)) * 12_000  # 3 MB: larger than the transport's read pause


def scenarios() -> dict[str, Callable[[int], tuple[bytes, bool, float]]]:
    once_unavailable = {1: (answer("503 Service Unavailable", b"busy"), False, 0.0)}
    return {
        "/plain": lambda n: (answer("200 OK", b'{"a": 1}'), False, 0.0),
        "/big": lambda n: (answer("200 OK", BIG), False, 0.0),
        "/chunked": lambda n: (answer("200 OK", chunked(BIG), "Transfer-Encoding: chunked", length=False), False, 0.0),
        "/gzip": lambda n: (answer("200 OK", gzip.compress(BIG), "Content-Encoding: gzip"), False, 0.0),
        "/until-close": lambda n: (b"HTTP/1.0 200 OK\r\n\r\n" + BIG, True, 0.0),
        "/missing": lambda n: (answer("404 Not Found", b"no"), False, 0.0),
        "/busy-once": lambda n: once_unavailable.get(n, (answer("200 OK", b"now"), False, 0.0)),
        "/slow": lambda n: (answer("200 OK", b"late"), False, 0.6),
        "/declared-too-big": lambda n: (answer("200 OK", b"x" * 5000), False, 0.0),
        "/chunked-too-big": lambda n: (answer("200 OK", chunked(b"x" * 5000, 1000), "Transfer-Encoding: chunked", length=False), False, 0.0),
        "/truncated": lambda n: (answer("200 OK", b"x" * 1000, "Content-Length: 2000", length=False), True, 0.0),
        "/not-http": lambda n: (b"SSH-2.0-OpenSSH\r\n\r\n", True, 0.0),
        "/moved": lambda n: (answer("302 Found", b"", "Location: /plain"), False, 0.0),
        "/forbidden": lambda n: (answer("403 Forbidden", b"no"), False, 0.0),
    }


async def fetch_with(transport: Any, base_url: str, relative: str, max_bytes: int) -> Any:
    """What `HttpSource` makes of a file over `transport`: ("ok", body) or (error, message)."""
    import httpx

    from neuron_desk.core.errors import SourceUnavailable
    from neuron_desk.data.sources import HttpSource

    client = httpx.AsyncClient(timeout=httpx.Timeout(0.3, connect=0.3), follow_redirects=True, transport=transport)
    source = HttpSource(base_url, client, retries=1, backoff_s=0.01, max_bytes=max_bytes, file_time_s=5)
    try:
        return "ok", await source.fetch(relative)
    except (NotFound, SourceUnavailable) as exc:
        return type(exc).__name__, str(exc)
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", list(scenarios()))
def test_the_lean_transport_gives_the_source_what_httpx_gives_it(path: str) -> None:
    from neuron_desk.core.transport import pooled_transport
    from neuron_desk.core.wire import LeanTransport

    max_bytes = 4000 if "too-big" in path else 16 * 1024 * 1024
    outcomes = []
    server = RawServer(scenarios())
    try:
        for make in (lambda: pooled_transport(4), lambda: LeanTransport(4)):
            server.script, server.asked = scenarios(), {}  # each from the start
            outcome = asyncio.run(fetch_with(make(), server.base_url, path.lstrip("/"), max_bytes))
            outcomes.append((outcome, dict(server.asked)))
    finally:
        server.close()
    (httpx_gets, httpx_asked), (lean_gets, lean_asked) = outcomes
    assert lean_gets == httpx_gets
    assert lean_asked == httpx_asked  # the same retries
    expected = {
        "/plain": "ok", "/big": "ok", "/chunked": "ok", "/gzip": "ok", "/until-close": "ok",
        "/busy-once": "ok", "/moved": "ok", "/missing": "NotFound",
    }.get(path, "SourceUnavailable")
    assert lean_gets[0] == expected
    if path in ("/big", "/chunked", "/gzip", "/until-close"):
        assert lean_gets[1] == BIG


def test_an_unreachable_host_is_unreachable_through_both_transports() -> None:
    from neuron_desk.core.transport import pooled_transport
    from neuron_desk.core.wire import LeanTransport

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # nothing listens there
    httpx_gets = asyncio.run(fetch_with(pooled_transport(4), url, "x.json", 1000))
    lean_gets = asyncio.run(fetch_with(LeanTransport(4), url, "x.json", 1000))
    assert lean_gets == httpx_gets
    assert lean_gets[0] == "SourceUnavailable" and "could not connect (ConnectError)" in lean_gets[1]


def test_the_lean_transport_keeps_connections_and_replaces_one_the_server_closed() -> None:
    import httpx

    from neuron_desk.core.wire import LeanTransport

    server = RawServer({
        "/a": lambda n: (answer("200 OK", b"a"), False, 0.0),
        "/last": lambda n: (answer("200 OK", b"last"), True, 0.0),  # then closes the connection
    })

    async def go() -> list[bytes]:
        async with httpx.AsyncClient(transport=LeanTransport(4)) as client:
            bodies = [(await client.get(f"{server.base_url}/a")).content for _ in range(5)]
            bodies.append((await client.get(f"{server.base_url}/last")).content)
            await asyncio.sleep(0.1)  # the server's close has arrived
            bodies.append((await client.get(f"{server.base_url}/a")).content)
            return bodies

    try:
        bodies = asyncio.run(go())
    finally:
        server.close()
    assert bodies == [b"a"] * 5 + [b"last", b"a"]
    assert server.connections == 2  # six requests on one connection, then a new one
    assert server.asked == {"/a": 6, "/last": 1}  # nothing sent twice


def test_a_kept_connection_closed_as_the_request_went_out_is_asked_again_on_a_new_one() -> None:
    import httpx

    from neuron_desk.core.wire import LeanTransport

    # the server closes after answering without saying so: the next request on that
    # connection meets a closed socket before any answer
    server = RawServer({"/a": lambda n: (answer("200 OK", b"a"), True, 0.0)})

    async def go() -> list[bytes]:
        async with httpx.AsyncClient(transport=LeanTransport(4, keepalive_expiry=60)) as client:
            first = (await client.get(f"{server.base_url}/a")).content
            second = (await client.get(f"{server.base_url}/a")).content
            return [first, second]

    try:
        assert asyncio.run(go()) == [b"a", b"a"]
    finally:
        server.close()
    assert server.connections == 2


def test_the_lean_transport_speaks_tls_and_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    import httpx

    from neuron_desk.core.errors import SourceUnavailable
    from neuron_desk.core.wire import LeanTransport
    from neuron_desk.data.sources import HttpSource

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    server = RawServer({"/data/f.json": lambda n: (answer("200 OK", BIG), False, 0.0)})
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    plain_serve = server.serve

    def serve_tls(conn: Any) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):  # a client refusing the certificate
            plain_serve(served.wrap_socket(conn, server_side=True))

    server.serve = serve_tls  # type: ignore[method-assign]
    trusted = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{server.port}/data"

    async def go(context: Any) -> Any:
        client = httpx.AsyncClient(transport=LeanTransport(4, ssl_context=context))
        source = HttpSource(url, client, retries=0)
        try:
            return await source.fetch("f.json")
        except SourceUnavailable as exc:
            return str(exc)
        finally:
            await client.aclose()

    try:
        assert asyncio.run(go(trusted)) == BIG
        refused = asyncio.run(go(httpx.create_ssl_context()))  # httpx's default trust
    finally:
        server.close()
    assert isinstance(refused, str) and "could not connect (ConnectError)" in refused


def test_a_fetched_file_comes_back_compressed_as_the_store_keeps_it(
    registry: Registry, mirror: Mirror, layout: Path
) -> None:
    from neuron_desk.data.store import decompress

    async def go() -> Any:
        checker = Checker(1)
        try:
            checker.start()
            await until(checker.ready)
            checked = await checker.fetch(
                Kind.EXPLANATIONS, mirror.base_url, "explanations/0/1.jsonl",
                dataset=registry.get("mirror"), ref=ref(0, 1), http=HTTP,
            )
            assert checked.stored is not None
            return checked, await checked.stored  # after the verdict
        finally:
            checker.close()

    checked, stored = asyncio.run(go())
    assert checked.text is None  # not 420 KB of text through the pipe
    assert stored is not None
    assert decompress(stored) == explanations_path(layout, 0, 1).read_text()
    assert checked.rows == [(" words with the letter e (0:1)", 0.42)]
    assert checked.exact == RULES_VERSION


def test_a_verdict_leaves_garbage_collection_as_it_was(registry: Registry, layout: Path) -> None:
    import gc

    from neuron_desk.data.checker import _verdict

    good = explanations_path(layout, 0, 1).read_bytes()
    dataset = registry.get("mirror")
    for body, verdict in ((good, "ok"), (good[:40], "refused")):
        answer = _verdict(7, Kind.EXPLANATIONS, dataset, ref(0, 1), "the file", body, to_store=True)
        assert answer[:2] == (7, verdict)
        assert gc.isenabled()


def test_the_mirror_process_serves_files_as_they_are_over_one_connection(layout: Path) -> None:
    import httpx

    from neuron_desk.core.wire import LeanTransport
    from tests.data.mirror import MirrorProcess

    async def go(base_url: str) -> list[tuple[int, bytes]]:
        async with httpx.AsyncClient(transport=LeanTransport(4)) as client:
            paths = ["explanations/0/1.jsonl", "explanations/0/1.jsonl", "explanations/1/7.jsonl"]
            return [((r := await client.get(f"{base_url}/{p}")).status_code, r.content) for p in paths]

    with MirrorProcess(layout, 0.01) as mirror:
        answers = asyncio.run(go(mirror.base_url))
    served = explanations_path(layout, 0, 1).read_bytes()
    assert answers[0] == answers[1] == (200, served)
    assert answers[2][0] == 404
    assert mirror.max_in_flight == 1


def test_a_request_cancelled_while_waiting_frees_its_connection_slot() -> None:
    import httpx

    from neuron_desk.core.wire import LeanTransport

    server = RawServer({
        "/slow": lambda n: (answer("200 OK", b"late"), False, 0.5),
        "/plain": lambda n: (answer("200 OK", b"now"), False, 0.0),
    })

    async def go() -> bytes:
        async with httpx.AsyncClient(transport=LeanTransport(1)) as client:  # one slot
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.get(f"{server.base_url}/slow")
            async with asyncio.timeout(2):
                return (await client.get(f"{server.base_url}/plain")).content

    try:
        assert asyncio.run(go()) == b"now"
    finally:
        server.close()
    assert server.connections == 2  # the half-answered connection was not used again


def test_children_that_end_while_starting_are_not_started_again_and_again(
    registry: Registry, mirror: Mirror
) -> None:
    dataset = registry.get("mirror")

    async def go() -> tuple[int, str]:
        checker = Checker(2, [sys.executable, "-c", "pass"])  # ends at once, never ready
        started = 0
        try:
            for _ in range(10):
                if checker.start():
                    started += 2
                await until(lambda: not checker.process_ids())
            with pytest.raises(CheckerUnavailable, match="ended before it was ready"):
                await checker.fetch(
                    Kind.EXPLANATIONS, mirror.base_url, "explanations/0/1.jsonl",
                    dataset=dataset, ref=ref(0, 1), http=HTTP,
                )
            return started, checker.failed_to_start
        finally:
            checker.close()

    started, why = asyncio.run(go())
    assert started == 4  # twice two, then no more
    assert why == "the checker process ended before it was ready 4 times"


def test_both_checker_processes_start_at_once(registry: Registry, store: Store) -> None:
    async def go() -> int:
        s = NeuronService(registry, store, timeout_s=5.0, checker_processes=2)
        try:
            s.expect_summaries("mirror")
            assert s.checker is not None
            return len(s.checker.process_ids())
        finally:
            await s.aclose()

    assert asyncio.run(go()) == 2


def test_a_frozen_app_checks_in_its_own_process(
    registry: Registry, store: Store, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # as in a PyInstaller bundle

    async def go() -> tuple[Any, int, list[int]]:
        s = NeuronService(registry, store, timeout_s=5.0, checker_processes=2)
        try:
            s.expect_summaries("mirror")
            best = await s.first_published(ref(0, 2))
            assert s.checker is not None
            return best, s.checker.answered, s.checker.process_ids()
        finally:
            await s.aclose()

    best, answered, pids = asyncio.run(go())
    assert best == (" words with the letter e (0:2)", 0.42)
    assert answered == 0 and pids == []
    assert store.get_file(ref(0, 2), "explanations") is not None


PATIENT_CHILD = """
import neuron_desk.data.checker as checker
checker.BLOB_WAIT_S = 30.0  # a text waits for every other verdict, however long
checker._main()
"""

SILENT_CHILD = """
import neuron_desk.data.checker as checker
checker._Server._compress_one = lambda self: None  # accepted texts are never sent
checker._main()
"""


def child_command(tmp_path: Path, script: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(script)
    return [sys.executable, str(path)]


def test_a_verdict_goes_at_once_and_its_text_once_no_other_fetch_is_to_be_judged(
    registry: Registry, mirror: Mirror, layout: Path, tmp_path: Path
) -> None:
    from neuron_desk.data.store import decompress

    mirror.faults.delay_s["explanations/0/2.jsonl"] = 0.8  # still to be judged meanwhile
    dataset = registry.get("mirror")

    async def go() -> tuple[bool, list[str | None]]:
        checker = Checker(1, child_command(tmp_path, PATIENT_CHILD))
        try:
            checker.start()
            await until(checker.ready)
            fast, slow = (
                asyncio.ensure_future(
                    checker.fetch(
                        Kind.EXPLANATIONS, mirror.base_url, f"explanations/{n.layer}/{n.index}.jsonl",
                        dataset=dataset, ref=n, http=HTTP,
                    )
                )
                for n in (ref(0, 1), ref(0, 2))
            )
            first = await fast
            assert first.stored is not None and first.rows
            await asyncio.sleep(0.3)
            waited = not first.stored.done()  # the slow file is still to be judged
            second = await slow
            assert second.stored is not None
            texts = [await first.stored, await second.stored]  # both come now
            return waited, [t and decompress(t) for t in texts]
        finally:
            checker.close()

    waited, texts = asyncio.run(go())
    assert waited
    assert texts == [
        explanations_path(layout, 0, 1).read_text(),
        explanations_path(layout, 0, 2).read_text(),
    ]


def test_a_text_waits_at_most_its_time_for_other_verdicts(
    registry: Registry, mirror: Mirror
) -> None:
    from neuron_desk.data import checker as checker_module

    mirror.faults.delay_s["explanations/0/4.jsonl"] = 2.0
    dataset = registry.get("mirror")

    async def go() -> tuple[float, bool]:
        checker = Checker(1)
        try:
            checker.start()
            await until(checker.ready)
            slow = asyncio.ensure_future(
                checker.fetch(
                    Kind.EXPLANATIONS, mirror.base_url, "explanations/0/4.jsonl",
                    dataset=dataset, ref=ref(0, 4), http=HTTP,
                )
            )
            first = await checker.fetch(
                Kind.EXPLANATIONS, mirror.base_url, "explanations/0/3.jsonl",
                dataset=dataset, ref=ref(0, 3), http=HTTP,
            )
            judged = time.monotonic()
            assert first.stored is not None
            assert await first.stored is not None
            waited = time.monotonic() - judged
            return waited, slow.done()
        finally:
            checker.close()

    waited, slow_done = asyncio.run(go())
    assert not slow_done
    assert waited < checker_module.BLOB_WAIT_S + 1.0


def test_a_summary_is_given_before_its_file_is_stored_and_a_read_waits_for_the_store(
    registry: Registry, store: Store, mirror: Mirror, tmp_path: Path
) -> None:
    mirror.faults.delay_s["explanations/0/5.jsonl"] = 0.8

    async def work(s: NeuronService) -> tuple[Any, bool, Any, bool]:
        s._checker = Checker(1, child_command(tmp_path, PATIENT_CHILD))
        s._checker.start()
        await until(s._checker.ready)
        slow = asyncio.ensure_future(s.first_published(ref(0, 5)))
        best = await s.first_published(ref(0, 4))
        stored_when_shown = store.has_file(ref(0, 4), "explanations")
        read = await s.get(ref(0, 4), Kind.EXPLANATIONS)  # waits for the store, no second fetch
        await slow
        return best, stored_when_shown, read, s._checker.answered == 2

    best, stored_when_shown, read, both_there = with_service(registry, store, work, warm=False)
    assert best == (" words with the letter e (0:4)", 0.42)
    assert not stored_when_shown
    assert read.origin == "store"  # read back once stored
    assert read.value.scored_explanations[0].explanation == best[0]
    assert both_there
    assert mirror.faults.requests.count("explanations/0/4.jsonl") == 1
    assert store.get_file(ref(0, 5), "explanations") is not None


def test_a_file_whose_text_never_comes_is_not_stored_nor_indexed_and_is_asked_again(
    registry: Registry, store: Store, mirror: Mirror, tmp_path: Path
) -> None:
    async def work(s: NeuronService) -> tuple[Any, Any]:
        s._checker = Checker(1, child_command(tmp_path, SILENT_CHILD))
        s._checker.start()
        await until(s._checker.ready)
        first = await s.first_published(ref(1, 0))
        for pid in s._checker.process_ids():  # ends before it sent the text
            os.kill(pid, 9)
        again = await s.first_published(ref(1, 0))  # not stored: fetched again, by a new child
        for pid in s._checker.process_ids():
            os.kill(pid, 9)
        await until(lambda: not s._checker.process_ids())
        return first, again

    first, again = with_service(registry, store, work, warm=False)
    assert first == again == (" words with the letter e (1:0)", 0.42)
    assert mirror.faults.requests.count("explanations/1/0.jsonl") == 2
    assert store.get_file(ref(1, 0), "explanations") is None
    assert Explanations(store).of(ref(1, 0)) == []  # no index of a file not stored


def test_texts_that_arrive_together_are_stored_in_one_transaction(
    registry: Registry, store: Store, mirror: Mirror, layout: Path
) -> None:
    batches: list[int] = []
    put_many = store.put_compressed_many

    def counted(files: Any) -> None:
        files = list(files)
        batches.append(len(files))
        put_many(files)

    store.put_compressed_many = counted  # type: ignore[method-assign]
    neighbours = [ref(0, n) for n in range(6)] + [ref(1, 0), ref(1, 1)]

    async def work(s: NeuronService) -> list[Any]:
        with store._lock:  # the store is busy while the texts come: they wait together
            shown = await asyncio.gather(*(s.first_published(n) for n in neighbours))
            await asyncio.sleep(0.5)
        return shown

    shown = with_service(registry, store, work)
    assert all(best is not None for best in shown)
    assert sum(batches) == 8
    assert len(batches) <= 2  # the first one (the store was busy), then all the others
    for n in neighbours:
        body = store.get_file(n, "explanations")
        assert body is not None and body.text == explanations_path(layout, n.layer, n.index).read_text()
        assert [r.explanation for r in Explanations(store).of(n)] == [shown[neighbours.index(n)][0]]


def test_fetches_started_at_once_are_joined_by_first_published_not_asked_twice(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> tuple[list[str], list[Any], int]:
        await s.first_published(ref(0, 3))  # stored now: not asked again
        s.start_first_published([ref(0, 1), ref(0, 2), ref(0, 3)])  # sent before any await
        # both sent at once, by either child: they reach the mirror in either order
        await until(
            lambda: all(
                mirror.faults.requests.count(f"explanations/0/{n}.jsonl") == 1 for n in (1, 2)
            )
        )
        asked = sorted(mirror.faults.requests)
        shown = [await s.first_published(n) for n in (ref(0, 1), ref(0, 2), ref(0, 3))]
        assert s.checker is not None
        return asked, shown, s.checker.answered

    asked, shown, answered = with_service(registry, store, work)
    assert asked == [f"explanations/0/{n}.jsonl" for n in (1, 2, 3)]  # 3: the first ask
    assert shown == [(f" words with the letter e (0:{n})", 0.42) for n in (1, 2, 3)]
    assert answered == 3
    assert mirror.faults.requests.count("explanations/0/1.jsonl") == 1


def test_nothing_is_started_at_once_while_no_checker_process_is_ready(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    async def work(s: NeuronService) -> list[str]:
        s.start_first_published([ref(0, 1)])  # the checker processes were not started
        await asyncio.sleep(0.3)
        return list(mirror.faults.requests)

    assert with_service(registry, store, work, warm=False) == []


def test_requests_larger_than_the_pipe_are_written_whole_and_in_order(
    registry: Registry, layout: Path
) -> None:
    """A body the pipe cannot take at once is written on by the writer thread, and what is
    sent meanwhile goes after it (not into the middle of it)."""
    dataset = registry.get("mirror")
    good = explanations_path(layout, 0, 1).read_bytes()
    large = good + b"\n" * 3_000_000  # blank lines after the JSON line: accepted

    async def go() -> list[Any]:
        checker = Checker(1)
        try:
            checker.start()
            await until(checker.ready)
            return list(
                await asyncio.gather(
                    checker.check(Kind.EXPLANATIONS, large, dataset=dataset, ref=ref(0, 1), source="a"),
                    checker.check(Kind.EXPLANATIONS, good, dataset=dataset, ref=ref(0, 1), source="b"),
                    checker.check(Kind.EXPLANATIONS, large, dataset=dataset, ref=ref(0, 1), source="c"),
                )
            )
        finally:
            checker.close()

    answers = asyncio.run(go())
    assert [a.rows for a in answers] == [[(" words with the letter e (0:1)", 0.42)]] * 3


LATE_SIBLING = """
import os, sys, time
try:
    os.close(os.open(sys.argv[1], os.O_CREAT | os.O_EXCL))  # the first child starts at once
except FileExistsError:
    time.sleep(0.15)  # its sibling a moment later
import neuron_desk.data.checker as checker
checker._main()
"""


def test_a_child_started_with_a_ready_one_gets_its_share_of_the_files(
    registry: Registry, mirror: Mirror, layout: Path, tmp_path: Path
) -> None:
    script = tmp_path / "late_sibling.py"
    script.write_text(LATE_SIBLING)
    dataset = registry.get("mirror")
    files = [(f"explanations/0/{n}.jsonl", ref(0, n)) for n in range(6)]

    async def go() -> tuple[bool, int, list[Any]]:
        checker = Checker(2, [sys.executable, str(script), str(tmp_path / "first")])
        try:
            checker.start()
            await until(checker.ready)
            one_ready = sum(c.ready for c in checker._children) == 1
            asked = checker.send_fetches(
                Kind.EXPLANATIONS, mirror.base_url, files, dataset=dataset, http=HTTP
            )
            shares = len({a.child for a in asked})
            return one_ready, shares, [(await a.answer()).rows for a in asked]
        finally:
            checker.close()

    one_ready, shares, rows = asyncio.run(go())
    assert one_ready  # the sibling was still starting when the files were sent
    assert shares == 2
    assert rows == [[(f" words with the letter e (0:{n})", 0.42)] for n in range(6)]


def test_files_the_store_cannot_take_are_shown_but_not_indexed(
    registry: Registry, store: Store, mirror: Mirror
) -> None:
    from neuron_desk.core.errors import StoreError

    def full(_files: Any) -> None:
        raise StoreError("the disk is full")

    store.put_compressed_many = full  # type: ignore[method-assign]

    async def work(s: NeuronService) -> Any:
        return await s.first_published(ref(0, 2))

    assert with_service(registry, store, work) == (" words with the letter e (0:2)", 0.42)
    assert store.get_file(ref(0, 2), "explanations") is None
    assert Explanations(store).of(ref(0, 2)) == []  # no index of a file not stored
