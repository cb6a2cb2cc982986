"""The corpus: text files cut into independent fixed-length token sequences.

Each file is read in blocks of whole lines and tokenized as it streams; its tokens are cut into
consecutive windows of `seq_len` tokens (a file's last partial window is dropped). When more
windows exist than wanted, a seeded reservoir sample keeps `max_sequences` of them, in corpus
order, so memory stays bounded by the sample and the choice depends only on the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

Encode = Callable[[str], list[int]]
"""Text to token ids, without special tokens."""

BLOCK_CHARS = 1 << 16


def read_blocks(path: Path, block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """The text of a UTF-8 file in blocks of whole lines, about `block_chars` long."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        block: list[str] = []
        size = 0
        for line in handle:
            block.append(line)
            size += len(line)
            if size >= block_chars:
                yield "".join(block)
                block, size = [], 0
        if block:
            yield "".join(block)


def windows(files: Sequence[Path], encode: Encode, seq_len: int) -> Iterator[list[int]]:
    """Consecutive `seq_len`-token windows of each file, files in the order given."""
    for path in files:
        pending: list[int] = []
        for block in read_blocks(path):
            pending.extend(encode(block))
            start = 0
            while len(pending) - start >= seq_len:
                yield pending[start : start + seq_len]
                start += seq_len
            pending = pending[start:]


def sample_sequences(
    files: Sequence[Path],
    encode: Encode,
    seq_len: int,
    max_sequences: int | None,
    seed: int,
) -> tuple[npt.NDArray[np.int32], int]:
    """A seeded sample of the corpus windows, in corpus order, and how many windows exist.

    Returns an int32 array (n_sequences, seq_len). Reservoir sampling (algorithm R) keeps at
    most `max_sequences` windows in memory.
    """
    rng = np.random.default_rng([seed, 0x5EC])
    kept: list[tuple[int, list[int]]] = []
    total = 0
    for index, window in enumerate(windows(files, encode, seq_len)):
        total += 1
        if max_sequences is None or len(kept) < max_sequences:
            kept.append((index, window))
        else:
            slot = int(rng.integers(0, index + 1))
            if slot < max_sequences:
                kept[slot] = (index, window)
    kept.sort(key=lambda item: item[0])
    array = np.array([w for _, w in kept], dtype=np.int32).reshape(len(kept), seq_len)
    return array, total
