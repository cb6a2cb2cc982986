"""Staged batches: a batch's requests written as files for an engine that batches (`vllm
run-batch`, the OpenAI Batch API), and the engine's output read back into the response cache.

A pass over the batch's neurons replays each one against the response cache (`ReplayBackend`,
the recording machinery of the estimates): a neuron whose explanation request is not cached
waits in the *explain* stage; once its explanations are cached, a neuron whose simulation
requests are not all cached waits in the *score* stage; a neuron whose every response is
cached is finished by the normal batch run against a backend that refuses to send, so no live
request ever leaves a staged batch and the results are those of an online batch of the same
spec. Each request is written once as an OpenAI Batch API line: `custom_id` is its response-cache
key and `body` the bytes the client would send. Files are split at the provider's limits (one
stage, path and model per file, as the Batch API requires), with a manifest.

Importing reads output lines (OpenAI Batch output and error files, `vllm run-batch` output: the
same shape) into the cache under their `custom_id`; failed and expired lines are reported and,
not being cached, are exported again by the next pass.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from neuron_desk.core.backend import JSONDict
from neuron_desk.core.errors import DataError, MethodError, NeuronDeskError
from neuron_desk.core.model import NeuronRecord
from neuron_desk.core.refs import NeuronRef
from neuron_desk.data.explanations import Explanations
from neuron_desk.data.registry import Kind
from neuron_desk.data.service import NeuronService
from neuron_desk.data.store import Store
from neuron_desk.llm.cache import ResponseCache, cache_key, compressed_response
from neuron_desk.llm.client import request_content
from neuron_desk.llm.ledger import PriceTable, Usage, prompt_text, record_usages, usage_of
from neuron_desk.method.tokens import count_tokens
from neuron_desk.runs.batch import BatchSpec
from neuron_desk.runs.estimate import (
    ReplayBackend,
    record_explaining,
    record_scoring,
    scoring_records,
)
from neuron_desk.runs.run import NeuronRun

EXPLAIN = "explain"
SCORE = "score"
FINISHED = "finished"
MANIFEST = "manifest.json"
API_PREFIX = "/v1"
"""Batch lines name the full path (`/v1/chat/completions`), as OpenAI and vLLM expect."""
_KEY = re.compile(r"[0-9a-f]{64}")
MAX_REPORTED_ERRORS = 50


@dataclass(frozen=True)
class FileLimits:
    """Where request files are split (OpenAI's Batch API: 50,000 requests, 200 MB a file)."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024


@dataclass
class RequestFile:
    """One written JSONL file of requests, with its estimate (completion tokens at most)."""

    name: str
    stage: str
    url: str
    model: str
    requests: int = 0
    bytes: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    cost_usd: float | None = 0.0
    """At batch prices (completion at its maximum); None when the model has no price."""


@dataclass
class StageCount:
    """Neurons waiting in a stage and the requests written for them."""

    neurons: int = 0
    requests: int = 0


@dataclass
class ExportReport:
    """What an export pass wrote, and which neurons it left where."""

    batch_id: str
    directory: str
    total: int
    done_before: int = 0
    finished_now: int = 0
    explain: StageCount = field(default_factory=StageCount)
    score: StageCount = field(default_factory=StageCount)
    no_data: int = 0
    failed: int = 0
    files: list[RequestFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def note(self, error: str) -> None:
        """Keep an error line (the first `MAX_REPORTED_ERRORS`; the counts have them all)."""
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    @property
    def requests(self) -> int:
        """Requests written."""
        return sum(f.requests for f in self.files)

    @property
    def cost_usd(self) -> float | None:
        """Estimated cost of every file at batch prices (None if a model has no price)."""
        costs = [f.cost_usd for f in self.files]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    def to_json(self) -> dict[str, Any]:
        """The manifest's body (and `--json` output)."""
        data = asdict(self)
        data["requests"] = self.requests
        data["prompt_tokens"] = sum(f.prompt_tokens for f in self.files)
        data["max_completion_tokens"] = sum(f.max_completion_tokens for f in self.files)
        data["cost_usd_at_batch_prices"] = self.cost_usd
        data["done"] = self.done_before + self.finished_now
        return data

    def describe(self, units: str = "neurons") -> str:
        """A few lines for the terminal (`units`: what the dataset's units are called)."""
        done = self.done_before + self.finished_now
        lines = [
            f"{self.batch_id}: {done}/{self.total} {units} done ({self.finished_now} finished "
            f"from cached responses now); waiting: {self.explain.neurons} to explain, "
            f"{self.score.neurons} to score; no activation records {self.no_data}, "
            f"failed {self.failed}",
        ]
        if self.files:
            cost = self.cost_usd
            lines.append(
                f"wrote {self.requests:,} requests in {len(self.files)} file(s) to "
                f"{self.directory} (~{sum(f.prompt_tokens for f in self.files):,} prompt tokens"
                + (f", ~${cost:.4f} at batch prices" if cost is not None else "")
                + "); run them, then: --import-results OUTPUT.jsonl..."
            )
        elif done == self.total:
            lines.append("nothing left to send: the batch is complete")
        return "\n".join(lines)


class RequestWriter:
    """Writes request lines into files split at the limits, one stage, path and model a file."""

    def __init__(self, directory: Path, limits: FileLimits, prices: PriceTable) -> None:
        self.directory = directory
        self.limits = limits
        self.prices = prices
        self.files: list[RequestFile] = []
        self._open: dict[tuple[str, str, str], tuple[RequestFile, IO[bytes], set[str]]] = {}
        self._tokens: dict[str, int] = {}

    def add(self, stage: str, path: str, body: JSONDict, endpoint: str) -> bool:
        """Write one request (once per file: a repeated custom_id is skipped); whether written."""
        model = str(body.get("model", ""))
        key = cache_key(endpoint, path, body)
        line = (
            b'{"custom_id":"' + key.encode() + b'","method":"POST","url":"' + API_PREFIX.encode()
            + path.encode() + b'","body":' + request_content(body) + b"}\n"
        )
        group = (stage, path, model)
        entry = self._open.get(group)
        if entry is not None and key in entry[2]:
            return False
        if entry is not None and (
            entry[0].requests >= self.limits.max_requests
            or entry[0].bytes + len(line) > self.limits.max_bytes
        ):
            entry[1].close()
            entry = None
        if entry is None:
            name = f"{stage}-{len(self.files) + 1:04d}.jsonl"
            info = RequestFile(name, stage, API_PREFIX + path, model)
            self.files.append(info)
            entry = (info, (self.directory / name).open("wb"), set())
            self._open[group] = entry
        info, handle, keys = entry
        handle.write(line)
        keys.add(key)
        info.requests += 1
        info.bytes += len(line)
        prompt = self._count(prompt_text(body))
        completion = int(body.get("max_tokens") or 0) * int(body.get("n", 1))
        info.prompt_tokens += prompt
        info.max_completion_tokens += completion
        cost = self.prices.cost(model, prompt, completion, batch=True)
        info.cost_usd = None if cost is None or info.cost_usd is None else info.cost_usd + cost
        return True

    def _count(self, text: str) -> int:
        tokens = self._tokens.get(text)
        if tokens is None:
            if len(self._tokens) > 4096:  # keep memory flat over a long export
                self._tokens.clear()
            tokens = self._tokens[text] = count_tokens(text)
        return tokens

    def close(self) -> None:
        """Close every file."""
        for _info, handle, _keys in self._open.values():
            handle.close()
        self._open.clear()


async def next_requests(
    run: NeuronRun, record: NeuronRecord, cache: ResponseCache
) -> tuple[str, list[tuple[str, JSONDict]]]:
    """A neuron's stage and the requests of it the cache can't answer yet (none: finished).

    The explanation request comes first; once its answer is cached, the explanations it holds
    are scored by replay, and the simulation requests not cached are the next stage's.
    """
    settings = run.options.settings()
    missing, texts = await record_explaining(
        record, run.explainer, settings, ReplayBackend(run.endpoint, cache)
    )
    if missing:
        return EXPLAIN, missing
    choice = run.choice or run.staged_choice()
    records = scoring_records(record, settings)
    wanted: list[tuple[str, JSONDict]] = []
    for explanation in dict.fromkeys(text.strip() for text in texts):
        if explanation:
            wanted += await record_scoring(
                records,
                explanation,
                lambda backend: run.simulators(choice, backend),
                backend=ReplayBackend(run.endpoint, cache, answer_hits=False),
            )
    return (SCORE, wanted) if wanted else (FINISHED, [])


async def export_pass(
    spec: BatchSpec,
    service: NeuronService,
    store: Store,
    run: NeuronRun,
    directory: Path,
    *,
    limits: FileLimits | None = None,
    prices: PriceTable | None = None,
) -> tuple[ExportReport, list[NeuronRef]]:
    """Write the next stage's requests of every neuron not done; the report and the neurons
    whose every response is cached (to be finished by the batch run)."""
    started = time.perf_counter()
    run.staged_choice()
    directory.mkdir(parents=True, exist_ok=True)
    _remove_previous_export(directory)
    done = Explanations(store).neurons_of_run(spec.batch_id)
    report = ExportReport(
        spec.batch_id, str(directory), len(spec.neurons), done_before=len(done)
    )
    cache = ResponseCache(store)
    writer = RequestWriter(directory, limits or FileLimits(), prices or run.prices)
    finished: list[NeuronRef] = []
    try:
        for ref in spec.neurons:
            if ref in done:
                continue
            try:
                record: NeuronRecord = (await service.get(ref, Kind.ACTIVATIONS)).value
                stage, requests = await next_requests(run, record, cache)
            except DataError as exc:
                report.no_data += 1
                report.note(f"{ref.short}: {exc}")
                continue
            except (NeuronDeskError, MethodError) as exc:
                report.failed += 1
                report.note(f"{ref.short}: {exc}")
                continue
            if stage == FINISHED:
                finished.append(ref)
                continue
            count = report.explain if stage == EXPLAIN else report.score
            count.neurons += 1
            for path, body in requests:
                count.requests += int(writer.add(stage, path, body, run.endpoint))
    finally:
        writer.close()
    report.files = writer.files
    report.seconds = time.perf_counter() - started
    return report, finished


def write_manifest(report: ExportReport, spec: BatchSpec, run: NeuronRun) -> Path:
    """The manifest next to the files: stage, counts, estimates, limits; never a key."""
    data = report.to_json()
    data["spec"] = {
        "dataset": spec.dataset,
        "neurons": len(spec.neurons),
        "profile": spec.profile,
        "samples": spec.samples,
        "endpoint": run.endpoint,
        "explainer_model": run.options.explainer_model,
        "simulator_model": run.options.simulator_model,
        "method": run.choice.method.value if run.choice and run.choice.method else None,
    }
    data["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = Path(report.directory) / MANIFEST
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _remove_previous_export(directory: Path) -> None:
    """Delete the files an earlier export listed in its manifest (and the manifest)."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8")).get("files") or []
    except (OSError, ValueError, AttributeError):
        listed = []
    for entry in listed:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and "/" not in name and name.endswith(".jsonl"):
            (directory / name).unlink(missing_ok=True)
    manifest.unlink()


# --- importing results ---


@dataclass
class ImportReport:
    """What reading output files did: responses cached, lines failed or expired."""

    lines: int = 0
    imported: int = 0
    already_cached: int = 0
    failed: int = 0
    expired: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0
    """The imported responses' usage at batch prices (None if a model has no price)."""
    errors: list[str] = field(default_factory=list)
    """The first failed lines, as `file:line: custom_id: message`."""

    def to_json(self) -> dict[str, Any]:
        """For `--json`."""
        data = asdict(self)
        data["usage"] = self.usage.to_json()
        return data

    def describe(self) -> str:
        """A few lines for the terminal."""
        cost = f", ${self.cost_usd:.4f} at batch prices" if self.cost_usd else ""
        lines = [
            f"read {self.lines:,} lines: {self.imported:,} responses cached "
            f"({self.already_cached:,} were already), {self.failed:,} failed, "
            f"{self.expired:,} expired; {self.usage.total_tokens:,} tokens{cost}"
        ]
        if self.failed or self.expired:
            lines.append("failed and expired requests are exported again by the next export")
        return "\n".join(lines)


IMPORT_CHUNK = 500
"""Output lines cached per transaction (kept compressed until written)."""


def import_results(
    paths: Sequence[Path],
    store: Store,
    endpoint: str,
    *,
    run_id: str,
    prices: PriceTable | None = None,
) -> ImportReport:
    """Read OpenAI Batch / vLLM run-batch output lines into the response cache by `custom_id`;
    each response's usage goes into the ledger under `run_id`, marked as a batch request."""
    report = ImportReport()
    cache = ResponseCache(store)
    prices = prices or PriceTable()
    chunk: list[tuple[str, str, bytes]] = []
    usages: list[tuple[str, Usage]] = []

    def flush() -> None:
        fresh = cache.put_many(endpoint, chunk)
        report.imported += fresh
        report.already_cached += len(chunk) - fresh
        record_usages(store, run_id, endpoint, usages, batch=True)
        chunk.clear()
        usages.clear()

    for path in paths:
        for number, key, outcome in _output_lines(path):
            report.lines += 1
            if isinstance(outcome, str):
                expired = outcome.startswith("expired")
                report.expired += int(expired)
                report.failed += int(not expired)
                if len(report.errors) < MAX_REPORTED_ERRORS:
                    report.errors.append(f"{path.name}:{number}: {key or '?'}: {outcome}")
                continue
            model = str(outcome.get("model", ""))
            usage = usage_of({"model": model}, outcome)
            chunk.append((key, model, compressed_response(outcome)))
            usages.append((model, usage))
            del outcome  # one parsed response at a time: memory stays flat
            report.usage.add(usage)
            cost = prices.cost(
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                cached_prompt_tokens=usage.cached_prompt_tokens,
                batch=True,
            )
            report.cost_usd = (
                None if cost is None or report.cost_usd is None else report.cost_usd + cost
            )
            if len(chunk) >= IMPORT_CHUNK:
                flush()
    if chunk:
        flush()
    return report


def _output_lines(path: Path) -> Iterable[tuple[int, str, JSONDict | str]]:
    """(line number, custom_id, the response body or what went wrong) of an output file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield number, "", "not a JSON line"
                continue
            if not isinstance(line, dict):
                yield number, "", "not a JSON object"
                continue
            key = line.get("custom_id")
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                yield number, str(key or ""), "no neuron-desk custom_id (a response-cache key)"
                continue
            yield number, key, _outcome(line)


def _outcome(line: JSONDict) -> JSONDict | str:
    """A line's response body, or a message: "expired: ..." for expired requests."""
    error = line.get("error")
    response = line.get("response")
    if isinstance(error, dict) and error:
        code = str(error.get("code") or "")
        text = str(error.get("message") or code or "error")
        return f"expired: {text}" if code == "batch_expired" else f"{code}: {text}"
    if error:
        return str(error)
    if not isinstance(response, dict):
        return "no response"
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        detail = body.get("error") if isinstance(body, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else detail or body
        return f"HTTP {status}: {message}"
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return "the response body has no choices"
    return body
