"""The repository stays light: no tracked file above 30 MB (issue 15's bundled dictionary)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 30 * 1024 * 1024


def test_no_tracked_file_is_larger_than_30_mb() -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    names = [n for n in listed.stdout.decode().split("\0") if n]
    sizes = {n: (ROOT / n).stat().st_size for n in names if (ROOT / n).is_file()}
    assert sizes, "git listed no files"
    too_big = {n: s for n, s in sizes.items() if s > LIMIT}
    assert not too_big, f"files above 30 MB: {too_big}"
