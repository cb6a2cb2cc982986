"""Every error neuron-desk raises on purpose, in one tree.

    NeuronDeskError
    ├── CodecError              a file or JSON value does not match the data model
    │   └── DictionaryFileError  an SAE/transcoder's weights or config are malformed or misfit
    ├── MethodError             the explanation/simulation method cannot proceed
    │   ├── PromptTooLongError  the prompt does not fit the context, even after trimming
    │   └── SimulationParseError  an LLM answer could not be aligned to the tokens
    ├── DataError               a dataset, a neuron or a file could not be had
    │   ├── UnknownDataset      no dataset of that name is registered
    │   ├── NeuronOutOfRange    the layer or neuron index is outside the dataset's shape
    │   ├── NotFound            the dataset has no such file (HTTP 404, missing file)
    │   ├── NotAvailableOffline not in the store or the bundled sample, and offline
    │   ├── SourceUnavailable   the source could not be reached, kept failing, or sent too much
    │   └── ReadOnlyDataset     a bundled dataset: nothing can be imported into it
    ├── StoreError              the SQLite store is locked, read-only, full or corrupt
    ├── BudgetExceeded          a run reached its token or money budget and stopped
    ├── ProbeUnavailable        testing your own text can't run: no build extra, no model
    └── BackendError            talking to an LLM endpoint failed
        ├── BackendConfigError  no endpoint or key configured, or a bad setting
        ├── BackendHTTPError    the endpoint answered with an error status
        ├── BackendUnavailable  connection refused, timed out, or dropped
        └── BackendResponseError  the endpoint answered, but not in the expected shape

Messages are written for the researcher reading them in the app or on the command line:
they say what failed and, where it helps, what to do. They never contain API keys.
"""

from __future__ import annotations


class NeuronDeskError(Exception):
    """Base class of all errors neuron-desk raises on purpose."""


MAX_MESSAGE_CHARS = 400
"""A refused file's message is one line of at most this many characters."""


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, cut to `limit` characters (an ellipsis marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class CodecError(NeuronDeskError, ValueError):
    """A JSON value does not match the data model; `path` names the field at fault.

    The message is one line, bounded: the file, what is wrong, and the field.
    """

    def __init__(self, message: str, path: str = "", source: str | None = None) -> None:
        self.path = bounded(path, 160)
        self.source = bounded(source, 200) if source else source
        where = f"{self.source}: " if source else ""
        at = f" (at {self.path})" if path else ""
        super().__init__(f"{where}{bounded(message, 200)}{at}")


class DictionaryFileError(CodecError):
    """A sparse dictionary's files (cfg.json, weights) are malformed or do not fit the model.

    `source` names the file, `path` the field or tensor (e.g. "W_enc", "d_in").
    """


class MethodError(NeuronDeskError):
    """The method (explainer, simulator, scoring) cannot proceed with these inputs."""


class PromptTooLongError(MethodError):
    """The prompt does not fit in the context window, even after dropping records."""


class SimulationParseError(MethodError):
    """An LLM answer to a simulation prompt could not be aligned to the tokens."""


class DataError(NeuronDeskError):
    """A dataset, a neuron or one of its files could not be had."""


class UnknownDataset(DataError):
    """No dataset of that name is registered."""


class NeuronOutOfRange(DataError):
    """The layer or neuron index is outside the dataset's shape."""


class NotFound(DataError):
    """The source has no such file: the neuron has no data of that kind."""


class NotAvailableOffline(DataError):
    """The file is neither stored nor bundled, and the app is offline."""


class SourceUnavailable(DataError):
    """The dataset's source could not be reached, or kept failing."""

    reason: str = ""
    """The source's own words, without the neuron (for grouping many failures)."""


class ReadOnlyDataset(DataError):
    """The dataset is bundled with the app and read-only: nothing can be imported into it."""


class StoreError(NeuronDeskError):
    """The SQLite store is locked, read-only, full or corrupt."""


class ProbeUnavailable(NeuronDeskError):
    """Testing your own text can't run: the build extra is missing, or no model is known."""


class BudgetExceeded(NeuronDeskError):
    """A run reached its budget (tokens or money) and stopped cleanly."""


class BackendError(NeuronDeskError):
    """Talking to an LLM endpoint failed."""


class BackendConfigError(BackendError):
    """The backend is not configured well enough to send a request."""


class BackendHTTPError(BackendError):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, status_code: int, message: str, url: str) -> None:
        self.status_code = status_code
        self.url = url
        super().__init__(f"HTTP {status_code} from {url}: {message}")


class BackendUnavailable(BackendError):
    """The endpoint could not be reached, timed out, or dropped the connection."""


class BackendResponseError(BackendError):
    """The endpoint answered 200, but the body is not what the request asked for."""
